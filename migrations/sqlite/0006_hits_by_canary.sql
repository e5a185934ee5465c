-- The per-canary index of hits, maintained in bulk (docs/storage.md, "Hits by canary").
--
-- A B-tree index on hits (canary_id, id) takes every new hit into the leaf of its canary:
-- with many canaries in use, each hit of a group commit dirtied a page of its own, about
-- two thirds of the pages a commit wrote to the WAL (docs/benchmarks.md, session 7).
-- Instead, each hit appends a small row to `hits_unindexed` (many rows a page), and the
-- trap's writer moves those rows into `hits_by_canary` in the index's order, many per
-- leaf, after its commits: one slice of the canaries at a time (a canary's slice is the
-- low four bits of its id's last byte), so no single move holds the writer long.
-- `GET /v1/hits?canary_id=` reads both tables in one statement, so a hit is listed the
-- moment it is committed.

DROP INDEX hits_canary;

CREATE TABLE hits_by_canary (
    canary_id BLOB NOT NULL,
    hit_id    BLOB NOT NULL,
    PRIMARY KEY (canary_id, hit_id)
) STRICT, WITHOUT ROWID;

-- Hits in commit order; those of a slice with seq <= its mark are in hits_by_canary
-- already (they are deleted once every slice's mark has passed them).
CREATE TABLE hits_unindexed (
    seq       INTEGER PRIMARY KEY,
    slice     INTEGER NOT NULL,
    canary_id BLOB NOT NULL,
    hit_id    BLOB NOT NULL
) STRICT;

CREATE TABLE hits_index_marks (
    slice   INTEGER PRIMARY KEY CHECK (slice BETWEEN 0 AND 15),
    through INTEGER NOT NULL
) STRICT;

WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 15)
INSERT INTO hits_index_marks (slice, through) SELECT n, 0 FROM s;

INSERT INTO hits_by_canary (canary_id, hit_id) SELECT canary_id, id FROM hits ORDER BY canary_id, id;
