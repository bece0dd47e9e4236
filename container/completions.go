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

// stored is the encoding of an instance's completion records.
type stored struct {
	_     struct{} `cbor:",toarray"`
	Recs  []completion
	Acked []watermark
}

// completions are an instance's completion records, oldest first, and the
// clients' watermarks, least recently raised first. Values are never
// modified in place: with returns a new set, adopted only once the write
// that carries it is durable.
type completions struct {
	recs  []completion
	acked []watermark
	raw   []byte // encoding, as stored
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
		return completions{}, err
	}
	return completions{recs: s.Recs, acked: s.Acked, raw: b}, nil
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
	for i := range c.acked {
		if bytes.Equal(c.acked[i].Client, client) {
			return seq < c.acked[i].Below
		}
	}
	return false
}

// with returns the set plus a record for the given call: the client's
// records below ack are dropped (it has their replies) and its watermark is
// raised to ack, then the oldest records and watermarks past the bounds go.
func (c completions) with(rec completion, ack uint64, maxRecs, maxBytes int) (completions, error) {
	out := make([]completion, 0, len(c.recs)+1)
	for _, r := range c.recs {
		if r.Seq < ack && bytes.Equal(r.Client, rec.Client) {
			continue
		}
		out = append(out, r)
	}
	out = append(out, rec)
	if len(out) > maxRecs {
		out = out[len(out)-maxRecs:]
	}
	size := 0
	for i := len(out) - 1; i >= 0; i-- {
		size += len(out[i].Client) + len(out[i].Reply) + 24
		if size > maxBytes && i < len(out)-1 {
			out = out[i+1:]
			break
		}
	}

	acked := make([]watermark, 0, len(c.acked)+1)
	below := ack
	for _, w := range c.acked {
		if bytes.Equal(w.Client, rec.Client) {
			below = max(below, w.Below)
			continue
		}
		acked = append(acked, w)
	}
	if below > 0 {
		acked = append(acked, watermark{Client: rec.Client, Below: below})
	}
	if len(acked) > maxRecs {
		acked = slices.Clone(acked[len(acked)-maxRecs:])
	}

	b, err := cbor.Marshal(stored{Recs: out, Acked: acked})
	return completions{recs: out, acked: acked, raw: b}, err
}

// len returns the number of records.
func (c completions) len() int { return len(c.recs) }
