package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable writes the report: a header, the table of cells, what the
// columns mean, the targets of issue 5, and the summary line last.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	cfg := &r.Config
	fmt.Fprintf(&b, "containerd-lite bench: %s %s/%s, %d CPUs (GOMAXPROCS %d), %s\n",
		r.GoVersion, r.GOOS, r.GOARCH, r.NumCPU, r.GOMAXPROCS, r.Started.Format(time.RFC3339))
	fmt.Fprintf(&b, "state %d B requested: carts of %d SKUs, %d B encoded; %v per cell after a %v warm-up",
		cfg.StateSize, r.SKUs, r.StateBytes, cfg.Duration, cfg.Warmup)
	if cfg.Rounds > 1 {
		fmt.Fprintf(&b, "; %d rounds, each cell its median round", cfg.Rounds)
	}
	b.WriteString("\n")
	if r.LoadBefore != "" {
		fmt.Fprintf(&b, "load average %s at the start, %s at the end (other processes skew every figure)\n", r.LoadBefore, r.LoadAfter)
	}
	if r.Schema != "" {
		fmt.Fprintf(&b, "PostgreSQL: %s, scratch schema %s (dropped)\n", redact(cfg.StoreURL), r.Schema)
	}
	if r.Partial {
		b.WriteString("PARTIAL: the run stopped early; these are the cells measured before\n")
	}
	b.WriteString("\n")

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-13s\tc\t", "workload")
	spread := r.Config.Rounds > 1
	if spread {
		fmt.Fprint(tw, "spread\t")
	}
	fmt.Fprintln(tw, "calls\tcalls/s\tp50 ms\tp99 ms\tmax ms\tallocs/call\tB/call\tCPU µs/call\thost busy\tratio\t")
	for _, c := range r.Cells {
		ratio := "-"
		if c.Baseline != "" {
			ratio = fmt.Sprintf("%.2f× %s", c.Ratio, c.Baseline)
		}
		cpu := "-"
		if c.CPUPerCall > 0 {
			cpu = fmt.Sprintf("%.1f", float64(c.CPUPerCall)/float64(time.Microsecond))
		}
		fmt.Fprintf(tw, "%-13s\t%d\t", c.Workload, c.C)
		if spread {
			fmt.Fprintf(tw, "±%.0f%%\t", 50*c.Spread)
		}
		busy := "-"
		if c.HostBusy >= 0 {
			busy = fmt.Sprintf("%.0f%%", 100*c.HostBusy)
		}
		fmt.Fprintf(tw, "%d\t%.0f\t%.3f\t%.3f\t%.2f\t%.1f\t%.0f\t%s\t%s\t%s\t\n",
			c.Calls, c.CallsPerSec, ms(c.P50), ms(c.P99), ms(c.Max), c.AllocsPerCall, c.BytesPerCall, cpu, busy, ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString(`
allocs/call, B/call and CPU µs/call count this whole process: client and node
(or both ends of an echo) together; PostgreSQL's own CPU is not in them.
host busy: the share of all the host's CPUs in use during the window, by
any process (this one, PostgreSQL, anything else): near 100%, the cell was
bound by CPU.
ratio is calls/s over the raw ceiling at the same c. raw-tcp: one connection
per caller. raw-yamux: one stream, calls multiplexed by id; envelope only, no
application work. reactivate-pg: the first call on a passivated instance.
`)
	if spread {
		b.WriteString("spread: half the range of calls/s over the rounds, relative to the median.\n")
	}
	if t := r.targets(); t != "" {
		b.WriteString("\n" + t)
	}
	if s := r.Summary(); s != "" {
		b.WriteString("\n" + s + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// summaryC returns the concurrency of the summary line: 64 if both cart-pg
// and raw-upsert ran at 64, else the largest c at which both ran, else 0.
func (r *Report) summaryC() int {
	best := 0
	for _, c := range r.Config.Concurrency {
		_, ok1 := r.Cell(CartPG, c)
		_, ok2 := r.Cell(RawUpsert, c)
		if ok1 && ok2 && (c == 64 || best != 64 && c > best) {
			best = c
		}
	}
	return best
}

// Summary returns the one-line summary of cart-pg against raw-upsert at
// c=64 (or the largest c at which both ran):
//
//	bench: c=64 calls_per_s=N raw_upsert_per_s=N ratio=R p99_ms=N raw_p99_ms=N
//
// It is empty when the two were not measured at a common concurrency.
func (r *Report) Summary() string {
	n := r.summaryC()
	if n == 0 {
		return ""
	}
	cl, _ := r.Cell(CartPG, n)
	raw, _ := r.Cell(RawUpsert, n)
	return fmt.Sprintf("bench: c=%d calls_per_s=%.0f raw_upsert_per_s=%.0f ratio=%.2f p99_ms=%.2f raw_p99_ms=%.2f",
		n, cl.CallsPerSec, raw.CallsPerSec, cl.CallsPerSec/raw.CallsPerSec, ms(cl.P99), ms(raw.P99))
}

// targets checks the targets of issue 5 (set for a 2-core machine).
func (r *Report) targets() string {
	var lines [][3]string
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	top := slices.Max(r.Config.Concurrency)
	if n := r.summaryC(); n != 0 {
		cl, _ := r.Cell(CartPG, n)
		raw, _ := r.Cell(RawUpsert, n)
		x := cl.CallsPerSec / raw.CallsPerSec
		lines = append(lines,
			[3]string{fmt.Sprintf("c=%d cart-pg calls/s >= 1.0x raw-upsert (aim 1.3x)", n), fmt.Sprintf("%.2fx", x), verdict(x >= 1)},
			[3]string{fmt.Sprintf("c=%d cart-pg p99 <= 1.5x raw-upsert p99", n), fmt.Sprintf("%.2fx", float64(cl.P99)/float64(raw.P99)), verdict(float64(cl.P99) <= 1.5*float64(raw.P99))})
	}
	if cl, ok := r.Cell(CartMem, top); ok {
		if raw, ok := r.Cell(RawYamux, top); ok {
			x := cl.CallsPerSec / raw.CallsPerSec
			lines = append(lines, [3]string{fmt.Sprintf("c=%d cart-mem calls/s >= 0.6x raw-yamux", top), fmt.Sprintf("%.2fx", x), verdict(x >= 0.6)})
		}
	}
	// The reactivation target is about one caller's latency: the lowest c.
	for _, n := range slices.Sorted(slices.Values(r.Config.Concurrency)) {
		if c, ok := r.Cell(ReactivatePG, n); ok {
			lines = append(lines, [3]string{fmt.Sprintf("c=%d reactivate-pg p50 < 2 ms", n), fmt.Sprintf("%.2f ms", ms(c.P50)), verdict(c.P50 < 2*time.Millisecond)})
			break
		}
	}
	if len(lines) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("targets (issue 5, for a 2-core machine):\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, l := range lines {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", l[0], l[1], l[2])
	}
	tw.Flush()
	return b.String()
}
