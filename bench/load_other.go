//go:build !linux

package bench

// loadAverage is not reported on this platform.
func loadAverage() string { return "" }

// hostCPU is not reported on this platform.
func hostCPU() (busy, total uint64, ok bool) { return 0, 0, false }
