"""WebDAV (RFC 4918) building blocks, sans-I/O: request bodies parsed safely (``xmlbody``), the If
header (``ifheader``), Multi-Status rendering (``multistatus``). The responders that use them sit on the
server's route table and fd-relative filesystem; docs/webdav.md says what is supported and how."""
