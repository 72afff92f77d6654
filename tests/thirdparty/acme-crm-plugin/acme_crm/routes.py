"""ACME's own HTTP route (the ``register_routes`` hook): a customer's ACME account number."""

from fastapi import APIRouter, Path
from pydantic import BaseModel


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
