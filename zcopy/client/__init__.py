"""The zcopy HTTP client: what `zcopy get | put | ls | rm | mv | seal` do.

It speaks plain HTTP/1.1 over one socket per command, so the same socket can
be handed to the transfer engines (sendfile for uploads, splice for
downloads): the file's bytes never pass through Python when nothing has to
be done to them. Encryption (age format, via pyrage) is the one case where
the bytes must be touched, and then they stream in bounded chunks.

Modules, one idea each: ``errors`` (one-line failures), ``url``, ``names``
(what a remote name may be saved as, how names are shown),
``connection`` (request head, response head, framed body), ``options``
(token, progress), ``progress``, ``crypto`` (age recipients and identities,
streaming), ``agepass`` (passphrase headers for streaming), ``partial`` (the
locked, checked FILE.part), ``download``, ``upload``, ``remote`` (ls, rm, mv) and ``seal``.
"""
