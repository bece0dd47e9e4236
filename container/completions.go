package container

import (
	"bytes"
	"hash/fnv"
	"slices"

	"github.com/fxamacker/cbor/v2"

	"github.com/containerd-lite/containerd-lite/registry"
)

// completion records that a call took effect: (client, seq) and its reply,
// written atomically with the state it produced (RIFL). The fingerprint of
// the method and arguments catches a sequence number reused for another call.
type completion struct {
	_           struct{} `cbor:",toarray"`
	Client      []byte
	Seq         uint64
	Fingerprint uint64
	Reply       []byte
}

// watermark records that a client has the replies of all its calls on the
// instance numbered below Below (it said so in a call's Ack). Their records
// may be gone, so a request numbered below Below can only be a stale copy —
// for instance one that sat in the socket buffer of a frozen node while the
// client retried elsewhere and moved on — and must be refused, never run.
type watermark struct {
	_      struct{} `cbor:",toarray"`
	Client []byte
	Below  uint64
}

// stored is the encoding of an instance's completion records. Evicted
// holds, per client, a watermark below which some of its records were
// pushed out by the bounds before the client acknowledged them.
type stored struct {
	_       struct{} `cbor:",toarray"`
	Recs    []completion
	Acked   []watermark
	Evicted []watermark
}

// storedV1 is the encoding before Evicted existed.
type storedV1 struct {
	_     struct{} `cbor:",toarray"`
	Recs  []completion
	Acked []watermark
}

// completions are an instance's completion records, oldest first, and the
// clients' watermarks, least recently raised first. Values are never
// modified in place: with returns a new set, adopted only once the write
// that carries it is durable.
type completions struct {
	recs    []completion
	acked   []watermark
	evicted []watermark
	raw     []byte // encoding, as stored
}

func fingerprint(call *registry.Call) uint64 {
	h := fnv.New64a()
	h.Write([]byte(call.Method))
	h.Write([]byte{0})
	h.Write(call.Args)
	return h.Sum64()
}

func decodeCompletions(b []byte) (completions, error) {
	if len(b) == 0 {
		return completions{}, nil
	}
	var s stored
	if err := cbor.Unmarshal(b, &s); err != nil {
		var v1 storedV1
		if cbor.Unmarshal(b, &v1) != nil {
			return completions{}, err
		}
		s.Recs, s.Acked = v1.Recs, v1.Acked
	}
	return completions{recs: s.Recs, acked: s.Acked, evicted: s.Evicted, raw: b}, nil
}

func (c completions) lookup(client []byte, seq uint64) (completion, bool) {
	for i := len(c.recs) - 1; i >= 0; i-- {
		r := &c.recs[i]
		if r.Seq == seq && bytes.Equal(r.Client, client) {
			return *r, true
		}
	}
	return completion{}, false
}

// stale reports whether a request numbered seq from client is below what
// the client acknowledged: a copy of a call it already has the reply of.
func (c completions) stale(client []byte, seq uint64) bool {
	return seq < below(c.acked, client)
}

// evictedBelow reports whether a request numbered seq from client, which
// has no record, may be a retry of a call whose record the bounds pushed
// out: running it again could apply it twice, so its outcome is unknown.
func (c completions) evictedBelow(client []byte, seq uint64) bool {
	return seq < below(c.evicted, client)
}

func below(ws []watermark, client []byte) uint64 {
	for i := range ws {
		if bytes.Equal(ws[i].Client, client) {
			return ws[i].Below
		}
	}
	return 0
}

// raise returns ws with client's watermark raised to at least to and moved
// to the end (most recently raised), keeping at most limit entries. An
// entry at or below drop (what the client has acknowledged) is left out.
func raise(ws []watermark, client []byte, to, drop uint64, limit int) []watermark {
	out := make([]watermark, 0, len(ws)+1)
	for _, w := range ws {
		if bytes.Equal(w.Client, client) {
			to = max(to, w.Below)
			continue
		}
		out = append(out, w)
	}
	if to > drop {
		out = append(out, watermark{Client: client, Below: to})
	}
	if len(out) > limit {
		out = slices.Clone(out[len(out)-limit:])
	}
	return out
}

// with returns the set plus a record for the given call: the client's
// records below ack are dropped (it has their replies) and its watermark is
// raised to ack, then the oldest records and watermarks past the bounds go.
// A record pushed out before its client acknowledged it leaves an evicted
// watermark behind, so that a late retry of that call is refused rather
// than run twice.
func (c completions) with(rec completion, ack uint64, maxRecs, maxBytes int) (completions, error) {
	out := make([]completion, 0, len(c.recs)+1)
	for _, r := range c.recs {
		if r.Seq < ack && bytes.Equal(r.Client, rec.Client) {
			continue
		}
		out = append(out, r)
	}
	out = append(out, rec)
	keep := max(len(out)-maxRecs, 0)
	size := 0
	for i := len(out) - 1; i >= keep; i-- {
		size += len(out[i].Client) + len(out[i].Reply) + 24
		if size > maxBytes && i < len(out)-1 {
			keep = i + 1
			break
		}
	}

	acked := raise(c.acked, rec.Client, ack, 0, maxRecs)
	evicted := c.evicted
	if ack > 0 && below(evicted, rec.Client) > 0 {
		evicted = raise(evicted, rec.Client, 0, ack, maxRecs)
	}
	for _, r := range out[:keep] {
		if r.Seq >= below(acked, r.Client) {
			evicted = raise(evicted, r.Client, r.Seq+1, 0, maxRecs)
		}
	}
	out = out[keep:]

	b, err := cbor.Marshal(stored{Recs: out, Acked: acked, Evicted: evicted})
	return completions{recs: out, acked: acked, evicted: evicted, raw: b}, err
}

// len returns the number of records.
func (c completions) len() int { return len(c.recs) }
