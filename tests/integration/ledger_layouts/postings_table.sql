-- The payout ledger's tables as installed up to commit 060de91: each transaction's postings in a
-- table of their own, checked by statement triggers to balance. Kept to test that installing the
-- current ledger brings such a database over (services/payout/projections.py, DDL).
-- Keys and ids compare as "C" (byte order): each posted event puts them into seven or eight
-- index entries, and under the database's default collation every comparison went through the
-- C library's strcoll on copies of both strings (a tenth of PostgreSQL's time in a replay). The
-- order is the one the digest sorts in anyway; equality is the same under any collation.
CREATE TABLE IF NOT EXISTS ledger_transactions (
    transaction_id   text COLLATE "C" PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('earned', 'scheduled', 'paid', 'failed')),
    business_key     text COLLATE "C" NOT NULL UNIQUE,
    event_id         text COLLATE "C" NOT NULL UNIQUE,
    event_type       text        NOT NULL,
    event_time       timestamptz NOT NULL,
    artisan_id       text COLLATE "C" NOT NULL,
    subject_id       text COLLATE "C" NOT NULL,
    amount_idr       bigint      NOT NULL CHECK (amount_idr >= 0),
    -- Where the event was read from: metadata for people, never part of the ledger's meaning
    -- (a replay reads other offsets, and the digest ignores these columns).
    source_topic     text,
    source_partition integer,
    source_offset    bigint,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ledger_transactions_earned
    ON ledger_transactions (artisan_id, event_time) WHERE kind = 'earned';

CREATE TABLE IF NOT EXISTS ledger_postings (
    -- Its transaction must exist: checked per statement by `ledger_postings_belong_and_balance`
    -- below, not by a foreign key, whose row-level checks lock the transaction's row once per
    -- posting (a third of the ledger's write cost). Ledgers installed with the key drop it.
    transaction_id text COLLATE "C" NOT NULL,
    account        text COLLATE "C" NOT NULL,
    amount_idr     bigint NOT NULL,
    PRIMARY KEY (transaction_id, account)
);
ALTER TABLE ledger_postings DROP CONSTRAINT IF EXISTS ledger_postings_transaction_id_fkey;
-- Ledgers installed before their keys were "C" are brought over once: the rows stay as they are
-- (text is text), each index on a changed column is rebuilt.
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN SELECT a.attrelid::regclass AS tab, a.attname AS name FROM pg_attribute a
               WHERE a.attrelid IN (to_regclass('ledger_transactions'), to_regclass('ledger_postings'))
                 AND a.attname IN ('transaction_id', 'business_key', 'event_id', 'artisan_id', 'subject_id', 'account')
                 AND a.attcollation <> 'pg_catalog."C"'::regcollation
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE text COLLATE "C"', col.tab, col.name);
    END LOOP;
END $$;
CREATE INDEX IF NOT EXISTS ledger_postings_account ON ledger_postings (account);

-- Double entry, enforced by the database: every statement that writes to the ledger must leave
-- each transaction it touched with at least two postings summing to zero, so a transaction and
-- its postings are written by one statement (the projection's `INSERT … WITH`). Checked once per
-- statement over its transition tables, not once per row at commit: a batch of a thousand
-- transactions is one join instead of thousands of trigger calls (statement triggers cannot be
-- deferred, hence at the statement's end). Only inserts need checking: the ledger refuses
-- updates, deletes and truncation outright (below). Two checks, one per table:
--
-- * every new transaction has at least two postings, summing to zero;
-- * every new posting belongs to a transaction that exists, and the new postings of each
--   transaction sum to zero.
--
-- Together they keep every transaction balanced: it is balanced when it is written (the first
-- check), and postings can only be added to it later, never changed or removed, in groups that
-- sum to zero (the second), so its sum stays zero and its postings stay at least two.
CREATE OR REPLACE FUNCTION ledger_transaction_balances() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced record;
BEGIN
    -- LATERAL: one index probe per new transaction, whatever the planner guesses of the
    -- transition table's size (a join was planned as a scan of every posting, once per batch).
    SELECT t.transaction_id, legs.legs, legs.total INTO unbalanced
        FROM new_transactions t,
        LATERAL (SELECT count(*) AS legs, coalesce(sum(p.amount_idr), 0) AS total
                 FROM ledger_postings p WHERE p.transaction_id = t.transaction_id) legs
        WHERE legs.legs < 2 OR legs.total <> 0
        LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: % postings summing to % rupiah',
            unbalanced.transaction_id, unbalanced.legs, unbalanced.total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION ledger_postings_belong_and_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wrong record;
BEGIN
    -- The statement's new postings summed per transaction (no probe of older postings: those
    -- already sum to zero), and one index probe per transaction for its row. LATERAL … LIMIT 1
    -- keeps it a probe: as a join, the plan PL/pgSQL cached while the ledger was small scanned
    -- the whole table on every statement (one event at a time slowed from 3,955 to 1,524/s
    -- over 30,000 events).
    SELECT added.transaction_id, added.total, existing.found IS NULL AS orphan INTO wrong
        FROM (SELECT transaction_id, sum(amount_idr) AS total FROM new_postings GROUP BY transaction_id) added
        LEFT JOIN LATERAL (SELECT true AS found FROM ledger_transactions t
                           WHERE t.transaction_id = added.transaction_id LIMIT 1) existing ON true
        WHERE existing.found IS NULL OR added.total <> 0
        LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    ELSIF wrong.orphan THEN
        RAISE EXCEPTION 'ledger postings refer to transaction %, which does not exist', wrong.transaction_id
            USING ERRCODE = 'foreign_key_violation';
    ELSE
        RAISE EXCEPTION 'ledger transaction % does not balance: its new postings sum to % rupiah',
            wrong.transaction_id, wrong.total USING ERRCODE = 'check_violation';
    END IF;
END $$;
DROP TRIGGER IF EXISTS ledger_postings_balanced ON ledger_postings;
CREATE TRIGGER ledger_postings_balanced AFTER INSERT ON ledger_postings
    REFERENCING NEW TABLE AS new_postings FOR EACH STATEMENT EXECUTE FUNCTION ledger_postings_belong_and_balance();
DROP TRIGGER IF EXISTS ledger_transactions_balanced ON ledger_transactions;
CREATE TRIGGER ledger_transactions_balanced AFTER INSERT ON ledger_transactions
    REFERENCING NEW TABLE AS new_transactions FOR EACH STATEMENT EXECUTE FUNCTION ledger_transaction_balances();

-- Corrections are new events, never edits: the ledger refuses to be rewritten.
CREATE OR REPLACE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;
DROP TRIGGER IF EXISTS ledger_transactions_append_only ON ledger_transactions;
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
DROP TRIGGER IF EXISTS ledger_postings_append_only ON ledger_postings;
CREATE TRIGGER ledger_postings_append_only BEFORE UPDATE OR DELETE ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
DROP TRIGGER IF EXISTS ledger_transactions_not_truncated ON ledger_transactions;
CREATE TRIGGER ledger_transactions_not_truncated BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
DROP TRIGGER IF EXISTS ledger_postings_not_truncated ON ledger_postings;
CREATE TRIGGER ledger_postings_not_truncated BEFORE TRUNCATE ON ledger_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
