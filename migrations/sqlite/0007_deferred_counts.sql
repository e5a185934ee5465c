-- Canary incidents' counters folded across group commits (docs/storage.md, "Counters
-- under load").
--
-- Under sustained load the trap's writer counts a canary's hits into its open incident
-- once per short interval instead of once per commit. While counts wait in memory this
-- row exists: `hits_rowid` is the newest hit's rowid when they started to wait, so every
-- hit not yet counted has a greater one. A start that finds the row (the process died
-- with counts waiting) recounts the incidents of those hits from the hits themselves,
-- then deletes it.
CREATE TABLE trap_deferred_counts (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    hits_rowid INTEGER NOT NULL
) STRICT;
