package e2e

import "testing"

// faultRow is one row of the fault table (docs/reliability.md).
// TEMPORARY STUB: the real recordFault and faultRow are in
// e2e/faulttable_test.go on another branch; the lead deletes this file at
// merge.
type faultRow struct {
	Fault, Produced, Did             string
	RowsLost, KillsLate, KillsMissed int
}

// recordFault is a no-op stub (see above).
func recordFault(t *testing.T, r faultRow) { t.Helper() }
