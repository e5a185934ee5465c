-- A hit's canary and store are checked once per batch, not by a foreign key per row.
--
-- The two foreign keys of `hits` ran, for every hit, a trigger that looked its canary
-- and its store up and locked both rows (FOR KEY SHARE, which also writes to the
-- canary's row): 28% of the trap writer's backend CPU at the benchmark's peak, and
-- about a fifth of the PostgreSQL canary throughput (docs/benchmarks.md, session 14).
-- The trap's group commit now checks every hit's (canary, store) pair against
-- `canaries` in the batch's own statement, and fails the batch if one is missing
-- (docs/storage.md, "Hits and their canaries"). What the foreign keys also gave, that a
-- referenced canary or store cannot be deleted, the triggers below give for every row:
-- keytrap never deletes canaries or stores (a canary is disabled, never removed), so a
-- hit's canary and store exist for as long as the hit does.
ALTER TABLE hits
    DROP CONSTRAINT IF EXISTS hits_canary_id_fkey,
    DROP CONSTRAINT IF EXISTS hits_store_id_fkey;

CREATE FUNCTION keytrap_never_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rows of % are never deleted: hits refer to them', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER canaries_never_deleted BEFORE DELETE OR TRUNCATE ON canaries
    FOR EACH STATEMENT EXECUTE FUNCTION keytrap_never_deleted();
CREATE TRIGGER stores_never_deleted BEFORE DELETE OR TRUNCATE ON stores
    FOR EACH STATEMENT EXECUTE FUNCTION keytrap_never_deleted();
