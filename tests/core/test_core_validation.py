"""Entities and validation: normalisation, ISO codes, money, stages, custom fields.

Every rejection must be a :class:`crmcore.ValidationError` whose issues name
the offending field, so an import can point at the exact column.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import attrs
import pytest

import crmcore
from crmcore import Config, CustomField, Customer, Deal, ValidationError
from crmcore.config import DEFAULT_PIPELINES
from crmcore.domain.convert import parse_decimal, structure
from crmcore.domain.validation import (
    EntityValidator,
    currency_digits,
    index_custom_fields,
    normalize_country,
    normalize_email,
    normalize_phone,
    quantize_money,
)


def fields_of(exc: ValidationError) -> list[str]:
    return [field for field, _ in exc.issues]


def validator(config: Config | None = None, fields: tuple[CustomField, ...] = ()) -> EntityValidator:
    config = config or Config()
    return EntityValidator(config, index_custom_fields(list(config.custom_fields) + list(fields)))


# -- email -----------------------------------------------------------------------

def test_email_domain_is_lowercased_local_part_kept() -> None:
    assert normalize_email("Zhang.Wei@Example.com") == "Zhang.Wei@example.com"


def test_email_internationalised_domain_needs_no_network() -> None:
    assert normalize_email("li@例子.中国") == "li@例子.中国"


@pytest.mark.parametrize("bad", ["zhang.wei", "a@@b.com", "a b@example.com", "@example.com"])
def test_bad_email_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid email"):
        normalize_email(bad)


def test_customer_email_normalised_and_error_names_field() -> None:
    v = validator()
    assert v.customer(Customer("张伟", email="Zhang.Wei@Example.com")).email == "Zhang.Wei@example.com"
    with pytest.raises(ValidationError) as err:
        v.customer(Customer("张伟", email="not-an-email"))
    assert fields_of(err.value) == ["email"]
    assert "email" in str(err.value) and "not-an-email" in str(err.value)


# -- phone -----------------------------------------------------------------------

def test_phone_national_number_with_configured_region() -> None:
    assert normalize_phone("138 0013 8000", "CN") == "+8613800138000"
    v = validator(Config(phone_region="CN"))
    assert v.customer(Customer("张伟", phone="138 0013 8000")).phone == "+8613800138000"


def test_phone_international_number_needs_no_region() -> None:
    assert normalize_phone("+86 138-0013-8000", None) == "+8613800138000"
    assert normalize_phone("+1 (650) 253-0000", "CN") == "+16502530000"


def test_phone_national_number_without_region_is_a_clear_error() -> None:
    with pytest.raises(ValidationError) as err:
        validator(Config()).customer(Customer("张伟", phone="138 0013 8000"))
    assert fields_of(err.value) == ["phone"]
    message = str(err.value)
    assert "phone" in message and "region" in message and "+<country code>" in message


@pytest.mark.parametrize("bad", ["12", "+86 123", "call me maybe"])
def test_invalid_phone_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="phone number"):
        normalize_phone(bad, "CN")


def test_contact_phone_and_email_are_normalised_too() -> None:
    v = validator(Config(phone_region="CN"))
    contact = v.contact(crmcore.Contact(1, "王芳", email="Wang.Fang@EXAMPLE.CN", phone="13800138000"))
    assert contact.email == "Wang.Fang@example.cn"
    assert contact.phone == "+8613800138000"


# -- country, currency, money -----------------------------------------------------

@pytest.mark.parametrize("given,expected", [("CN", "CN"), ("cn", "CN"), ("CHN", "CN"), ("deu", "DE")])
def test_country_alpha2_and_alpha3(given: str, expected: str) -> None:
    assert normalize_country(given) == expected
    assert validator().customer(Customer("x", country=given)).country == expected


@pytest.mark.parametrize("bad", ["China", "XX", "ZZZ", "C"])
def test_bad_country_names_field(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        validator().customer(Customer("x", country=bad))
    assert fields_of(err.value) == ["country"]


@pytest.mark.parametrize("code,digits", [("JPY", 0), ("CNY", 2), ("USD", 2), ("KWD", 3), ("EUR", 2)])
def test_currency_minor_units(code: str, digits: int) -> None:
    assert currency_digits(code) == digits


@pytest.mark.parametrize("bad", ["XYZ", "RMB", "usdollar", "US"])
def test_unknown_currency_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        currency_digits(bad)


@pytest.mark.parametrize("amount,currency,expected", [
    ("1200", "JPY", "1200"),
    ("12000", "CNY", "12000.00"),
    ("0.5", "CNY", "0.50"),
    ("1.234", "KWD", "1.234"),
    ("7", "KWD", "7.000"),
])
def test_quantize_to_minor_unit(amount: str, currency: str, expected: str) -> None:
    result = quantize_money(Decimal(amount), currency)
    assert str(result) == expected
    assert result == Decimal(amount)


@pytest.mark.parametrize("amount,currency", [("1200.5", "JPY"), ("0.001", "CNY"), ("1.2345", "KWD")])
def test_quantize_refuses_lost_digits(amount: str, currency: str) -> None:
    with pytest.raises(ValueError, match="decimals"):
        quantize_money(Decimal(amount), currency)


def test_negative_amount_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        quantize_money(Decimal("-0.01"), "CNY")


def deal(**changes: object) -> Deal:
    base = Deal(customer_id=1, title="年度合同", amount=Decimal("12000"), currency="CNY", stage="lead")
    return attrs.evolve(base, **changes)


def test_deal_amount_and_currency_normalised() -> None:
    result = validator().deal(deal(currency="cny"))
    assert result.currency == "CNY"
    assert str(result.amount) == "12000.00"
    assert result.probability == 10  # the stage's default


@pytest.mark.parametrize("changes,field", [
    ({"currency": "XYZ"}, "currency"),
    ({"amount": Decimal("-1")}, "amount"),
    ({"amount": Decimal("1.5"), "currency": "JPY"}, "amount"),
    ({"stage": "closed-won"}, "stage"),
    ({"pipeline": "enterprise"}, "pipeline"),
    ({"title": "  "}, "title"),
    ({"probability": 101}, "probability"),
    ({"lost_reason": "price"}, "lost_reason"),
])
def test_bad_deal_fields_named(changes: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        validator().deal(deal(**changes))
    assert field in fields_of(err.value)
    assert f"{field}:" in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as err:
        validator().deal(deal(currency="XYZ", stage="nope", title=""))
    assert set(fields_of(err.value)) == {"currency", "stage", "title"}


def test_float_amount_refused_by_structuring() -> None:
    with pytest.raises(ValidationError) as err:
        structure({"customer_id": 1, "title": "t", "amount": 0.1, "currency": "CNY", "stage": "lead"}, Deal, "deal")
    assert fields_of(err.value) == ["amount"]
    assert "float" in str(err.value)


def test_amount_text_and_int_accepted() -> None:
    built = structure({"customer_id": "1", "title": "t", "amount": "12,000.50", "currency": "CNY",
                       "stage": "lead"}, Deal, "deal")
    assert built.amount == Decimal("12000.50") and built.customer_id == 1
    assert structure({"customer_id": 1, "title": "t", "amount": 5, "currency": "JPY", "stage": "lead"},
                     Deal).amount == Decimal(5)


@pytest.mark.parametrize("bad", ["abc", "1e", "NaN", "Infinity", "", None, [1]])
def test_parse_decimal_refuses_non_numbers(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_decimal(bad)


# -- pipelines and stages -----------------------------------------------------------

CUSTOM_PIPELINES = {
    "pipelines": {
        "retail": {"stages": [
            {"name": "询价", "probability": 10},
            {"name": "报价", "probability": 40},
            {"name": "成交", "probability": 100, "outcome": "won"},
            {"name": "流失", "probability": 0, "outcome": "lost"},
        ]},
    },
}


def test_stage_must_exist_in_custom_pipeline() -> None:
    config = Config.from_mapping(CUSTOM_PIPELINES)
    assert list(config.pipelines) == ["retail"]
    ok = validator(config).deal(deal(pipeline="retail", stage="报价"))
    assert ok.probability == 40
    with pytest.raises(ValidationError) as err:
        validator(config).deal(deal(pipeline="retail", stage="lead"))
    assert fields_of(err.value) == ["stage"]
    assert "询价" in str(err.value)  # lists the known stages
    with pytest.raises(ValidationError) as err:
        validator(config).deal(deal(pipeline="default", stage="lead"))
    assert fields_of(err.value) == ["pipeline"]


def test_default_pipeline_has_won_and_lost() -> None:
    pipeline = DEFAULT_PIPELINES["default"]
    assert pipeline.stages_with(crmcore.StageOutcome.WON) == ["won"]
    assert pipeline.stages_with(crmcore.StageOutcome.LOST) == ["lost"]


# -- interactions ------------------------------------------------------------------

AT = datetime(2026, 6, 30, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("score", [1, 3, 5])
def test_satisfaction_in_range(score: int) -> None:
    i = crmcore.Interaction(1, crmcore.InteractionKind.CALL, AT, satisfaction=score)
    assert validator().interaction(i).satisfaction == score


@pytest.mark.parametrize("score", [0, 6, -1])
def test_satisfaction_out_of_range(score: int) -> None:
    i = crmcore.Interaction(1, crmcore.InteractionKind.CALL, AT, satisfaction=score)
    with pytest.raises(ValidationError) as err:
        validator().interaction(i)
    assert fields_of(err.value) == ["satisfaction"]


def test_resolved_before_occurred_refused() -> None:
    i = crmcore.Interaction(1, crmcore.InteractionKind.COMPLAINT, AT, resolved_at=AT - timedelta(hours=1))
    with pytest.raises(ValidationError) as err:
        validator().interaction(i)
    assert fields_of(err.value) == ["resolved_at"]


def test_enum_fields_name_their_choices() -> None:
    with pytest.raises(ValidationError) as err:
        structure({"customer_id": 1, "kind": "fax", "occurred_at": AT}, crmcore.Interaction, "interaction")
    assert fields_of(err.value) == ["kind"]
    assert "meeting" in str(err.value)
    assert structure({"customer_id": 1, "kind": "CALL", "occurred_at": AT},
                     crmcore.Interaction).kind is crmcore.InteractionKind.CALL


# -- unknown and missing fields ------------------------------------------------------

def test_unknown_entity_field_refused_and_named() -> None:
    with pytest.raises(ValidationError) as err:
        structure({"name": "张伟", "emial": "x@example.com"}, Customer, "customer")
    assert fields_of(err.value) == ["emial"]
    assert "unknown field" in str(err.value)


def test_missing_required_field_named() -> None:
    with pytest.raises(ValidationError) as err:
        structure({"email": "x@example.com"}, Customer, "customer")
    assert fields_of(err.value) == ["name"]
    assert "required" in str(err.value)


# -- custom fields --------------------------------------------------------------------

FIELDS = (
    CustomField("customer", "vip_level", "int"),
    CustomField("customer", "credit_limit", "decimal"),
    CustomField("customer", "newsletter", "bool"),
    CustomField("customer", "first_order", "date"),
    CustomField("customer", "tier", "choice", choices=("gold", "silver")),
    CustomField("customer", "wechat", "str", required=True),
)


@pytest.mark.parametrize("values,expected", [
    ({"vip_level": "3"}, {"vip_level": 3}),
    ({"credit_limit": Decimal("1000.50")}, {"credit_limit": "1000.50"}),
    ({"credit_limit": "0.10"}, {"credit_limit": "0.10"}),
    ({"newsletter": "yes"}, {"newsletter": True}),
    ({"newsletter": "0"}, {"newsletter": False}),
    ({"first_order": date(2026, 1, 31)}, {"first_order": "2026-01-31"}),
    ({"first_order": "2026-01-31"}, {"first_order": "2026-01-31"}),
    ({"tier": "gold"}, {"tier": "gold"}),
])
def test_custom_field_coercion(values: dict, expected: dict) -> None:
    result = validator(fields=FIELDS).customer(Customer("张伟", attributes={"wechat": "zw", **values}))
    assert result.attributes == {"wechat": "zw", **expected}


@pytest.mark.parametrize("values,field", [
    ({"vip_level": "three"}, "vip_level"),
    ({"vip_level": True}, "vip_level"),
    ({"vip_level": 2.5}, "vip_level"),
    ({"credit_limit": 0.1}, "credit_limit"),
    ({"credit_limit": "lots"}, "credit_limit"),
    ({"newsletter": "maybe"}, "newsletter"),
    ({"first_order": "31/01/2026"}, "first_order"),
    ({"tier": "bronze"}, "tier"),
    ({"wechat": 123}, "wechat"),
])
def test_custom_field_type_errors_name_the_field(values: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        validator(fields=FIELDS).customer(Customer("张伟", attributes={"wechat": "zw", **values}))
    assert fields_of(err.value) == [field]
    assert str(err.value).startswith(f"invalid customer: {field}: ")


def test_required_custom_field() -> None:
    with pytest.raises(ValidationError) as err:
        validator(fields=FIELDS).customer(Customer("张伟"))
    assert fields_of(err.value) == ["wechat"]
    assert "required" in str(err.value)


def test_custom_field_on_other_entity_does_not_apply() -> None:
    v = validator(fields=(CustomField("deal", "vip_level", "int"),))
    assert v.customer(Customer("x", attributes={"vip_level": "high"})).attributes == {"vip_level": "high"}
    with pytest.raises(ValidationError):
        v.deal(deal(attributes={"vip_level": "high"}))


def test_custom_field_declared_twice_refused() -> None:
    with pytest.raises(ValueError, match="customer.vip_level"):
        index_custom_fields([CustomField("customer", "vip_level", "int"), CustomField("customer", "vip_level")])


def test_custom_field_declaration_checked() -> None:
    with pytest.raises(ValueError, match="type"):
        CustomField("customer", "x", "float")
    with pytest.raises(ValueError, match="entity"):
        CustomField("company", "x")


# -- through the services (config + plugin declarations) -----------------------------

class FieldsPlugin:
    __name__ = "fieldsplug"

    @crmcore.hookimpl
    def register_custom_fields(self, register):
        register(CustomField("deal", "po_number", "int", description="purchase order"))


def test_services_validate_config_and_plugin_custom_fields(sqlite_crm) -> None:
    crm = sqlite_crm({
        "phone_region": "CN",
        "custom_fields": [{"entity": "customer", "name": "vip_level", "type": "int"}],
    }, extra_plugins=[FieldsPlugin()])
    c = crm.customers.add(name="张伟", email="Zhang.Wei@Example.com", phone="138 0013 8000",
                          country="chn", attributes={"vip_level": "2"})
    assert (c.email, c.phone, c.country, c.attributes) == (
        "Zhang.Wei@example.com", "+8613800138000", "CN", {"vip_level": 2})
    with pytest.raises(ValidationError) as err:
        crm.customers.add(name="李娜", attributes={"vip_level": "gold"})
    assert fields_of(err.value) == ["vip_level"]
    d = crm.deals.add(customer_id=c.id, title="t", amount="100", currency="JPY", stage="lead",
                      attributes={"po_number": "4711"})
    assert d.attributes == {"po_number": 4711} and d.amount == Decimal(100)
    with pytest.raises(ValidationError) as err:
        crm.deals.add(customer_id=c.id, title="t", amount="100", currency="JPY", stage="lead",
                      attributes={"po_number": "PO-1"})
    assert fields_of(err.value) == ["po_number"]
    with pytest.raises(ValidationError) as err:
        crm.deals.add(customer_id=c.id, title="t", amount=1.5, currency="CNY", stage="lead")
    assert fields_of(err.value) == ["amount"]
    with pytest.raises(ValidationError) as err:
        crm.customers.add(name="x", nickname="y")
    assert fields_of(err.value) == ["nickname"]
    with pytest.raises(ValidationError) as err:
        crm.customers.update(c.id, phone="12")
    assert fields_of(err.value) == ["phone"]
    assert crm.customers.count() == 1 and crm.deals.count() == 1


def test_services_default_currency_and_unknown_references(sqlite_crm) -> None:
    crm = sqlite_crm({"default_currency": "KWD"})
    c = crm.customers.add(name="Ahmad")
    d = crm.deals.add(customer_id=c.id, title="t", amount="1.5", stage="proposal")
    assert d.currency == "KWD" and str(d.amount) == "1.500" and d.probability == 50
    with pytest.raises(ValidationError) as err:
        crm.deals.add(customer_id=999, title="t", amount="1", stage="lead")
    assert fields_of(err.value) == ["customer_id"]
    with pytest.raises(ValidationError) as err:
        crm.interactions.add(customer_id=c.id, kind="call", occurred_at=AT, contact_id=12345)
    assert fields_of(err.value) == ["contact_id"]
