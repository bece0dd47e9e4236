package container

import (
	"bytes"
	"hash/fnv"

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

// completions are an instance's completion records, oldest first. The slice
// is never modified in place: with returns a new set, adopted only once the
// write that carries it is durable.
type completions struct {
	recs []completion
	raw  []byte // encoding of recs, as stored
}

func fingerprint(call *registry.Call) uint64 {
	h := fnv.New64a()
	h.Write([]byte(call.Method))
	h.Write([]byte{0})
	h.Write(call.Args)
	return h.Sum64()
}

func decodeCompletions(b []byte) (completions, error) {
	var c completions
	if len(b) == 0 {
		return c, nil
	}
	err := cbor.Unmarshal(b, &c.recs)
	c.raw = b
	return c, err
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

// with returns the set plus a record for the given call, dropping the
// client's records below ack (the client has their replies) and then the
// oldest records past the bounds.
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
	b, err := cbor.Marshal(out)
	return completions{recs: out, raw: b}, err
}

// len returns the number of records.
func (c completions) len() int { return len(c.recs) }
