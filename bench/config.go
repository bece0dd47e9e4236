package bench

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Workload names one kind of measurement (see the package documentation).
type Workload string

// The workloads, in the order they are reported.
const (
	RawUpsert    Workload = "raw-upsert"
	CartPG       Workload = "cart-pg"
	RawYamux     Workload = "raw-yamux"
	RawTCP       Workload = "raw-tcp"
	CartMem      Workload = "cart-mem"
	CartSQLite   Workload = "cart-sqlite"
	ReactivatePG Workload = "reactivate-pg"
)

// Workloads returns every workload, in report order.
func Workloads() []Workload {
	return []Workload{RawUpsert, CartPG, RawYamux, RawTCP, CartMem, CartSQLite, ReactivatePG}
}

// Baseline returns the raw ceiling w is compared with, or "" for none.
func (w Workload) Baseline() Workload {
	switch w {
	case CartPG:
		return RawUpsert
	case CartMem:
		return RawYamux
	case RawYamux:
		return RawTCP
	}
	return ""
}

// NeedsPostgres reports whether w runs against the PostgreSQL server.
func (w Workload) NeedsPostgres() bool {
	return w == RawUpsert || w == CartPG || w == ReactivatePG
}

// ParseWorkloads parses a comma-separated list of workload names; "all"
// means every workload.
func ParseWorkloads(s string) ([]Workload, error) {
	var out []Workload
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
			continue
		case f == "all":
			return Workloads(), nil
		case !slices.Contains(Workloads(), Workload(f)):
			return nil, fmt.Errorf("unknown workload %q (known: all, %s)", f, joinWorkloads(Workloads()))
		case !slices.Contains(out, Workload(f)):
			out = append(out, Workload(f))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no workload given")
	}
	return out, nil
}

func joinWorkloads(ws []Workload) string {
	s := make([]string, len(ws))
	for i, w := range ws {
		s[i] = string(w)
	}
	return strings.Join(s, ", ")
}

// ParseConcurrency parses a comma-separated list of positive integers.
func ParseConcurrency(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("concurrency %q is not a positive integer", f)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no concurrency given")
	}
	return out, nil
}

// Config configures a run. Start from DefaultConfig; the zero value of a
// field means its default.
type Config struct {
	// StoreURL is the PostgreSQL server, as a postgres:// or postgresql://
	// URL. Required when a PostgreSQL workload runs. The run works in a
	// scratch schema of its own, which it drops at the end.
	StoreURL string
	// Duration is the measured window of each cell. Default 5s.
	Duration time.Duration
	// Warmup runs before each cell's window, unmeasured. Default 1s;
	// negative means none.
	Warmup time.Duration
	// Concurrency lists the numbers of concurrent callers. Default 1, 8, 64.
	Concurrency []int
	// StateSize is the encoded state size of each instance (and of each raw
	// row) in bytes. Default 1024.
	StateSize int
	// Workloads selects what runs. Default all.
	Workloads []Workload
	// Rounds repeats the whole sequence of cells this many times; each
	// cell reports its round of median calls/s, and the spread. On a
	// machine shared with other work, a few rounds make figures that can
	// be compared. Default 1.
	Rounds int
	// Reactivations is the number of passivated instances prepared for each
	// reactivate-pg cell: the cell ends when they are used up, or after
	// Duration. Default 3000.
	Reactivations int
	// CPUProfileDir, when set, receives a CPU profile of each cell's
	// measured window, named WORKLOAD-cN.pprof. Profiling costs a few
	// percent of throughput.
	CPUProfileDir string
	// Progress receives one line per cell as the run goes. Nil discards.
	Progress io.Writer `json:"-"`
}

// DefaultConfig returns a fresh copy of the defaults (StoreURL unset).
func DefaultConfig() *Config {
	return &Config{
		Duration:      5 * time.Second,
		Warmup:        time.Second,
		Concurrency:   []int{1, 8, 64},
		StateSize:     1024,
		Workloads:     Workloads(),
		Reactivations: 3000,
		Rounds:        1,
	}
}

// minStateSize is the smallest state the cart can be sized to: an empty
// cart plus one SKU.
const minStateSize = 16

// maxConcurrency bounds the callers of a cell: each raw-upsert caller holds
// a database connection of its own, and each caller a latency histogram
// of about 150 KB.
const maxConcurrency = 512

// Validate reports what is wrong with c, if anything.
func (c *Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults returns a copy of c with its zero fields defaulted, or an
// error naming the invalid field.
func (c *Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	out := Config{}
	if c != nil {
		out = *c
	}
	if out.Duration == 0 {
		out.Duration = d.Duration
	}
	if out.Warmup == 0 {
		out.Warmup = d.Warmup
	}
	out.Warmup = max(out.Warmup, 0)
	if len(out.Concurrency) == 0 {
		out.Concurrency = d.Concurrency
	}
	if out.StateSize == 0 {
		out.StateSize = d.StateSize
	}
	if len(out.Workloads) == 0 {
		out.Workloads = d.Workloads
	}
	if out.Rounds == 0 {
		out.Rounds = d.Rounds
	}
	if out.Reactivations == 0 {
		out.Reactivations = d.Reactivations
	}
	if out.Progress == nil {
		out.Progress = io.Discard
	}
	switch {
	case out.Duration < 0:
		return out, fmt.Errorf("bench: negative duration %v", out.Duration)
	case out.Rounds < 0:
		return out, fmt.Errorf("bench: negative number of rounds %d", out.Rounds)
	case out.Reactivations < 0:
		return out, fmt.Errorf("bench: negative number of reactivations %d", out.Reactivations)
	case out.StateSize < minStateSize || out.StateSize > 1<<20:
		return out, fmt.Errorf("bench: state size %d is outside %d..%d bytes", out.StateSize, minStateSize, 1<<20)
	}
	for _, n := range out.Concurrency {
		if n <= 0 || n > maxConcurrency {
			return out, fmt.Errorf("bench: concurrency %d is outside 1..%d", n, maxConcurrency)
		}
	}
	for _, w := range out.Workloads {
		if !slices.Contains(Workloads(), w) {
			return out, fmt.Errorf("bench: unknown workload %q", w)
		}
		if w.NeedsPostgres() && !isPostgresURL(out.StoreURL) {
			if out.StoreURL == "" {
				return out, fmt.Errorf("bench: workload %s needs a PostgreSQL URL (Config.StoreURL, --store postgres://...)", w)
			}
			return out, fmt.Errorf("bench: the store must be a postgres:// or postgresql:// URL, got %q", redact(out.StoreURL))
		}
	}
	out.Concurrency = slices.Clone(out.Concurrency)
	out.Workloads = slices.Clone(out.Workloads)
	return out, nil
}

func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}
