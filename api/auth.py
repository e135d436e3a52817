"""Who is calling: FastAPI dependencies that turn an LNbits key into a user id.

The caller is always the LNbits user behind the key (docs/api.md, "Who is calling").
An operator's endpoints take the admin key of any wallet they own (reads also an
invoice key); an LP's the same for their own wallets; the super user's only a wallet
of the LNbits super user. An operator and an LP are both plain LNbits users: what
each may see is decided by the services (services/access.py), not here; the two
names say which role a route serves.
"""

from fastapi import Depends
from lnbits.core.models import WalletTypeInfo
from lnbits.decorators import require_admin_key, require_invoice_key
from lnbits.settings import settings

from ..errors import Forbidden


def operator_writer(key_info: WalletTypeInfo = Depends(require_admin_key)) -> str:
    return key_info.wallet.user


def operator_reader(key_info: WalletTypeInfo = Depends(require_invoice_key)) -> str:
    return key_info.wallet.user


def lp_writer(key_info: WalletTypeInfo = Depends(require_admin_key)) -> str:
    return key_info.wallet.user


def lp_reader(key_info: WalletTypeInfo = Depends(require_invoice_key)) -> str:
    return key_info.wallet.user


def super_user(key_info: WalletTypeInfo = Depends(require_admin_key)) -> str:
    if key_info.wallet.user != settings.super_user:
        raise Forbidden("only the super user may do this")
    return key_info.wallet.user
