// Package storetest is the conformance suite every passivate.Store must
// pass: ownership claims and fencing, compare-and-set conflicts, leases,
// removal and tombstones, missing keys, large values, group-committed
// concurrent writers and writers in two processes.
//
// A backend's test calls Run, and its TestMain calls Main so that the
// suite can re-execute the test binary as a second writer process:
//
//	func TestMain(m *testing.M) { storetest.Main(m, open) }
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{New: newStore, Open: open})
//	}
package storetest
