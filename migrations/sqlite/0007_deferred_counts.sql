-- Canary incidents' counters folded across group commits (docs/storage.md, "Counters
-- under load").
--
-- Under sustained load the trap's writer counts a canary's hits into its open incident
-- once per short interval instead of once per commit. While counts wait in memory this
-- row exists: `hits_rowid` is the newest hit's rowid when they started to wait, so every
-- hit not yet counted has a greater one. The next trap writer to take the lock that
-- finds the row (the process died with counts waiting) recounts the incidents of those
-- hits from the hits themselves, then deletes it.
CREATE TABLE trap_deferred_counts (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    hits_rowid INTEGER NOT NULL
) STRICT;

-- Bumped by every write of the API to `incidents` (acknowledge, resolve), in the same
-- transaction: a trap writer that sees it change forgets which incidents it knew open,
-- whichever process made the change.
CREATE TABLE incident_writes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
) STRICT;
INSERT INTO incident_writes (id, n) VALUES (1, 0);
