"""Materials reconciliation's rules (shared/materials.py, docs/materials.md) at their edges, and the
decider of `material-usage-set` (services/production/domain.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from services.payout.dashboard.queries import Dashboard
from services.payout.dashboard.view import render_dashboard
from services.production import domain
from shared.contracts.events import MaterialUsageSet
from shared.domain import Conflict, NotFound, fold
from shared.materials import (
    IDLE_MATERIALS,
    WOVEN_BEYOND_MATERIALS,
    IssueFact,
    PieceFact,
    UsageFact,
    reconcile,
)

WIB = timezone(timedelta(hours=7))
MARCH = datetime(2024, 3, 4, 9, 0, tzinfo=WIB)
AS_OF = date(2024, 3, 10)


def usage(quantity: int, effective_from: datetime = MARCH - timedelta(days=30), *, product: str = "piring",
          material: str = "rotan", unit: str = "g", collaborator: str = "col_1") -> UsageFact:
    return UsageFact(collaborator, product, material, unit, quantity, effective_from)


def issue(quantity: int, at: datetime = MARCH, *, artisan: str = "res_1", material: str = "rotan",
          unit: str = "g", collaborator: str = "col_1") -> IssueFact:
    return IssueFact(artisan, collaborator, material, unit, quantity, at)


def pieces(n: int, at: datetime = MARCH, *, product: str = "piring", artisan: str = "res_1",
           collaborator: str = "col_1", passed: int = 0) -> PieceFact:
    return PieceFact(artisan, collaborator, product, at, woven=n, passed=passed)


def flags(result) -> set[tuple[str, str, str]]:
    return {(a.kind, a.artisan_id, a.material) for a in result.anomalies}


# --- woven beyond materials ----------------------------------------------------------------------


def test_weaving_exactly_the_allowance_is_not_flagged():
    result = reconcile([usage(250)], [issue(1000)], [pieces(4)], as_of=AS_OF)

    (line,) = result.holdings[0].materials
    assert (line.issued, line.expected, line.remaining, line.flags) == (1000, 1000, 0, ())
    assert result.anomalies == []


def test_one_piece_over_the_allowance_is_flagged_woven_beyond_materials():
    result = reconcile([usage(250)], [issue(1000)], [pieces(5)], as_of=AS_OF)

    (anomaly,) = result.anomalies
    assert (anomaly.kind, anomaly.artisan_id, anomaly.collaborator_id) == (WOVEN_BEYOND_MATERIALS, "res_1", "col_1")
    assert (anomaly.issued, anomaly.expected) == (1000, 1250)


def test_one_unit_short_is_flagged_too():
    result = reconcile([usage(250)], [issue(999)], [pieces(4)], as_of=AS_OF)

    assert flags(result) == {(WOVEN_BEYOND_MATERIALS, "res_1", "rotan")}


def test_pieces_without_any_materials_issued_are_woven_beyond_materials():
    result = reconcile([usage(250)], [], [pieces(1)], as_of=AS_OF)

    assert flags(result) == {(WOVEN_BEYOND_MATERIALS, "res_1", "rotan")}
    assert result.holdings[0].materials[0].issued == 0


def test_failed_pieces_used_their_materials_too():
    # Materials are used by weaving, whatever QC says: 5 woven, 1 passed still needs 5 pieces' worth.
    result = reconcile([usage(250)], [issue(1000)], [pieces(5, passed=1)], as_of=AS_OF)

    assert flags(result) == {(WOVEN_BEYOND_MATERIALS, "res_1", "rotan")}
    assert (result.holdings[0].woven, result.holdings[0].passed) == (5, 1)


def test_issues_are_per_collaborator_and_per_material():
    result = reconcile(
        [usage(250), usage(10, material="pewarna", unit="ml")],
        # Rotan given for another collaborator does not cover pieces woven for this one.
        [issue(1000, collaborator="col_2"), issue(40, material="pewarna", unit="ml")],
        [pieces(4)], as_of=AS_OF,
    )

    assert flags(result) == {(WOVEN_BEYOND_MATERIALS, "res_1", "rotan")}


def test_an_issue_in_another_unit_than_the_usage_does_not_cover_it():
    # 1 kg is not compared with grams: the usage's line has nothing issued, the kg line no use.
    result = reconcile([usage(250)], [issue(1, unit="kg")], [pieces(1, at=MARCH - timedelta(days=1))], as_of=AS_OF)

    lines = {(line.material, line.unit): line for line in result.holdings[0].materials}
    assert lines["rotan", "g"].flags == (WOVEN_BEYOND_MATERIALS,)
    assert (lines["rotan", "kg"].issued, lines["rotan", "kg"].expected) == (1, 0)


def test_artisans_are_reconciled_apart():
    result = reconcile([usage(250)], [issue(1000), issue(250, artisan="res_2")],
                       [pieces(4), pieces(2, artisan="res_2")], as_of=AS_OF)

    assert flags(result) == {(WOVEN_BEYOND_MATERIALS, "res_2", "rotan")}


# --- usage over time -----------------------------------------------------------------------------


def test_each_piece_needs_the_usage_in_force_when_it_was_woven():
    change = MARCH
    usages = [usage(300, change - timedelta(days=30)), usage(200, change)]
    woven = [pieces(2, change - timedelta(seconds=1)), pieces(3, change)]  # the change applies from its moment

    result = reconcile(usages, [issue(1200)], woven, as_of=AS_OF)

    assert result.holdings[0].materials[0].expected == 2 * 300 + 3 * 200
    assert result.anomalies == []
    assert flags(reconcile(usages, [issue(1199)], woven, as_of=AS_OF)) == {(WOVEN_BEYOND_MATERIALS, "res_1", "rotan")}


def test_a_piece_woven_before_any_usage_needs_nothing():
    result = reconcile([usage(250, MARCH)], [issue(250)], [pieces(3, MARCH - timedelta(days=1)), pieces(1)],
                       as_of=AS_OF)

    assert result.holdings[0].materials[0].expected == 250
    assert result.anomalies == []


def test_a_usage_of_zero_ends_the_use_of_a_material():
    result = reconcile([usage(250, MARCH - timedelta(days=10)), usage(0, MARCH)], [issue(250)],
                       [pieces(1, MARCH - timedelta(days=5)), pieces(9)], as_of=AS_OF)

    assert result.holdings[0].materials[0].expected == 250
    assert result.anomalies == []


def test_usages_are_per_product_and_per_collaborator():
    result = reconcile(
        [usage(250), usage(400, product="tas"), usage(1, collaborator="col_2")],
        [issue(250 + 400)], [pieces(1), pieces(1, product="tas"), pieces(1, product="dompet")], as_of=AS_OF,
    )

    assert result.holdings[0].materials[0].expected == 650


# --- idle materials ------------------------------------------------------------------------------


def test_materials_untouched_exactly_n_weeks_are_idle():
    issued = datetime(2024, 2, 11, 20, 0, tzinfo=WIB)  # 28 days before AS_OF, in WIB
    result = reconcile([], [issue(500, issued)], [], as_of=AS_OF, idle_weeks=4)

    (anomaly,) = result.anomalies
    assert (anomaly.kind, anomaly.last_activity_on) == (IDLE_MATERIALS, date(2024, 2, 11))


def test_a_day_short_of_n_weeks_is_not_idle():
    issued = datetime(2024, 2, 12, 8, 0, tzinfo=WIB)
    assert reconcile([], [issue(500, issued)], [], as_of=AS_OF, idle_weeks=4).anomalies == []


def test_the_weeks_are_counted_in_wib_days():
    # 17:30 UTC on 11 February is 00:30 on the 12th in Jakarta: 27 days before AS_OF, not 28.
    issued = datetime(2024, 2, 11, 17, 30, tzinfo=UTC)
    assert reconcile([], [issue(500, issued)], [], as_of=AS_OF, idle_weeks=4).anomalies == []


def test_n_is_a_setting():
    issued = datetime(2024, 3, 3, 9, 0, tzinfo=WIB)  # a week before AS_OF
    assert flags(reconcile([], [issue(500, issued)], [], as_of=AS_OF, idle_weeks=1)) == {
        (IDLE_MATERIALS, "res_1", "rotan")}
    assert reconcile([], [issue(500, issued)], [], as_of=AS_OF, idle_weeks=2).anomalies == []


def test_a_recent_piece_for_the_collaborator_keeps_materials_from_being_idle():
    recent = datetime(2024, 3, 1, 9, 0, tzinfo=WIB)
    result = reconcile([usage(100)], [issue(1000, datetime(2024, 1, 1, tzinfo=WIB))],
                       [pieces(1, recent, product="tas")], as_of=AS_OF)

    assert result.anomalies == []


def test_a_piece_for_another_collaborator_does_not():
    result = reconcile([], [issue(1000, datetime(2024, 1, 1, tzinfo=WIB))],
                       [pieces(1, datetime(2024, 3, 9, tzinfo=WIB), collaborator="col_2")], as_of=AS_OF)

    assert flags(result) == {(IDLE_MATERIALS, "res_1", "rotan")}


def test_a_recent_issue_restarts_the_clock():
    result = reconcile([], [issue(100, datetime(2024, 1, 1, tzinfo=WIB)), issue(100, datetime(2024, 3, 8, tzinfo=WIB))],
                       [], as_of=AS_OF)
    assert result.anomalies == []


def test_materials_used_up_are_never_idle():
    long_ago = datetime(2023, 12, 1, 9, 0, tzinfo=WIB)
    result = reconcile([usage(250, long_ago - timedelta(days=1))], [issue(1000, long_ago)], [pieces(4, long_ago)],
                       as_of=AS_OF)
    assert result.anomalies == []
    left_over = reconcile([usage(250, long_ago - timedelta(days=1))], [issue(1001, long_ago)],
                          [pieces(4, long_ago)], as_of=AS_OF)
    assert flags(left_over) == {(IDLE_MATERIALS, "res_1", "rotan")}


def test_facts_after_as_of_are_left_out():
    later = datetime(2024, 3, 11, 0, 0, tzinfo=WIB)
    result = reconcile([usage(250)], [issue(1000), issue(5000, later)], [pieces(4), pieces(10, later)], as_of=AS_OF)

    (holding,) = result.holdings
    assert (holding.woven, holding.materials[0].issued, holding.materials[0].expected) == (4, 1000, 1000)


def test_idle_weeks_out_of_bounds_are_refused():
    for weeks in (0, 53, -1):
        with pytest.raises(ValueError, match="idle_weeks"):
            reconcile([], [], [], as_of=AS_OF, idle_weeks=weeks)


def test_totals_per_collaborator_add_up_its_artisans():
    result = reconcile([usage(250)], [issue(1000), issue(250, artisan="res_2")],
                       [pieces(4), pieces(2, artisan="res_2")], as_of=AS_OF)

    (total,) = result.totals()
    assert (total.collaborator_id, total.material, total.unit) == ("col_1", "rotan", "g")
    assert (total.issued, total.expected, total.artisans, total.flagged) == (1250, 1500, 2, 1)


# --- the decider of material-usage-set -----------------------------------------------------------

COLLABORATOR = domain.Collaborator(collaborator_id="col_1", name="PT Anyaman")


def set_usage(quantity: int, effective_from: datetime = MARCH, unit: str = "g") -> domain.SetMaterialUsage:
    return domain.SetMaterialUsage(collaborator_id="col_1", product="piring", material="rotan", unit=unit,
                                   quantity_per_piece=quantity, effective_from=effective_from)


def after(*commands: domain.SetMaterialUsage) -> domain.Collaborator:
    state = COLLABORATOR
    for command in commands:
        state = fold(domain.evolve_collaborator, state, domain.decide_collaborator(state, command))
    return state


def test_setting_a_usage_records_it_and_the_collaborator_keeps_its_history_in_order():
    state = after(set_usage(250, MARCH), set_usage(300, MARCH - timedelta(days=5)))

    assert [u.quantity_per_piece for u in state.usages["piring", "rotan"]] == [300, 250]
    (event,) = domain.decide_collaborator(COLLABORATOR, set_usage(250))
    assert event == MaterialUsageSet(collaborator_id="col_1", product="piring", material="rotan", unit="g",
                                     quantity_per_piece=250, effective_from=MARCH)
    assert event.record_key() == "col_1"


def test_the_same_usage_again_is_a_no_op_and_a_different_one_at_the_same_moment_a_conflict():
    state = after(set_usage(250))

    assert domain.decide_collaborator(state, set_usage(250)) == []
    with pytest.raises(Conflict) as refused:
        domain.decide_collaborator(state, set_usage(260))
    assert refused.value.code == "usage-already-set"


def test_a_usage_in_another_unit_is_refused():
    with pytest.raises(Conflict) as refused:
        domain.decide_collaborator(after(set_usage(250)), set_usage(1, MARCH + timedelta(days=1), unit="kg"))
    assert refused.value.code == "usage-unit-changed"


def test_a_usage_for_an_unknown_collaborator_is_refused():
    with pytest.raises(NotFound):
        domain.decide_collaborator(domain.Collaborator(), set_usage(250))


# --- the dashboard's section ---------------------------------------------------------------------


def test_the_dashboard_section_escapes_what_events_name_and_shows_each_anomaly():
    hostile = '<img src=x onerror="alert(1)">'  # a valid label: no control characters, no long digit rows
    result = reconcile([usage(250, material=hostile)], [issue(1000, material=hostile)], [pieces(5)], as_of=AS_OF)
    page = render_dashboard(Dashboard(generated_at=MARCH, cohorts=[], ovop=[], weeks=[], artisans=[], runs=[],
                                      materials=result), "id")

    section = page[page.index('id="materials"'):]
    assert hostile not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in section
    assert "Bahan baku" in section
    assert 'data-anomaly="woven-beyond-materials" data-flagged-artisan="res_1"' in section
    assert "1.250 g" in section  # Indonesian digit grouping
