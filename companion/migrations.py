"""None: the companion keeps no data of its own. Everything it shows and saves is
satmachineadmin's, read and written through that extension's services
(docs/companion.md). LNbits still imports this module and `db` when it installs an
extension, so both exist."""
