"""Named accounts: the users file, access rules and password hashes.

Three ideas, one module each:

- ``users``: the users file, a plain text file, one account a line (its format is documented in
  docs/accounts.md and in that module); reading it with line-numbered errors, writing it atomically
  with mode 0600.
- ``rules``: what an account may do where: ``PATH:PERMS`` rules matched on whole decoded path
  segments, the longest match winning; and the table of which permission letters each HTTP method needs.
- ``passwords``: argon2id hashes (argon2-cffi): making one at a chosen cost and checking one.

The server side (HTTP Basic, verification off the event loop, throttling, share links) builds on these.
"""
