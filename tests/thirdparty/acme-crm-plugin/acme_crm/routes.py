"""ACME's own HTTP routes (the ``register_routes`` hook): a customer's ACME account number, who
the caller is, and the plugin's version."""

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from crmcore.web import current_user


class AcmeAccount(BaseModel):
    customer_id: int
    acme_account: str | None


def add_routes(router: APIRouter, crm) -> None:
    @router.get("/acme/accounts/{customer_id}", response_model=AcmeAccount, tags=["acme"],
                operation_id="acme_account", summary="A customer's ACME account number")
    def account(customer_id: int = Path(ge=1, le=2**31 - 1)) -> AcmeAccount:
        # The request acts as its token's user: get() asks authorize and applies visibility.
        customer = crm.customers.get(customer_id)
        return AcmeAccount(customer_id=customer_id, acme_account=customer.attributes.get("acme_account"))

    @router.get("/acme/whoami", tags=["acme"], operation_id="acme_whoami", summary="The caller's login")
    def whoami(login: str = Depends(current_user)) -> dict[str, str]:
        return {"login": login}

    @router.get("/acme/version", tags=["acme"], operation_id="acme_version", summary="ACME's version")
    def version() -> dict[str, str]:
        # Touches no database: the route class still checks the token before this answer is sent.
        return {"version": "1.0"}
