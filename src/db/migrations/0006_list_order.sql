-- The instance list (issue 17, item 5) reads rows in launch order: an index in that order
-- spares SQLite a sort of every row, and a partial one over the instances not
-- terminated lets the default list (and each monitor tick) skip the terminated rows,
-- however many accumulate.
CREATE INDEX instances_created ON instances(created_at, id);
CREATE INDEX instances_live_created ON instances(created_at, id) WHERE state != 'terminated';
