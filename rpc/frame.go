package rpc

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"reflect"
	"sync"

	"github.com/fxamacker/cbor/v2"

	"github.com/containerd-lite/containerd-lite/registry"
)

// header is a frame's fixed-size prefix.
type header struct {
	length uint32
	kind   byte
	id     uint64
}

func putHeader(b []byte, h header) {
	binary.BigEndian.PutUint32(b[0:4], h.length)
	b[4] = h.kind
	binary.BigEndian.PutUint64(b[5:13], h.id)
}

func parseHeader(b []byte) header {
	return header{length: binary.BigEndian.Uint32(b[0:4]), kind: b[4], id: binary.BigEndian.Uint64(b[5:13])}
}

// hello opens a session.
type hello struct {
	Version uint64 `cbor:"1,keyasint"`
	Client  []byte `cbor:"2,keyasint,omitempty"`
	Token   string `cbor:"3,keyasint,omitempty"`
}

// welcome answers a hello. A non-empty Code refuses the session.
type welcome struct {
	Version     uint64 `cbor:"1,keyasint"`
	Incarnation string `cbor:"2,keyasint,omitempty"`
	Addr        string `cbor:"3,keyasint,omitempty"`
	Code        string `cbor:"4,keyasint,omitempty"`
	Message     string `cbor:"5,keyasint,omitempty"`
	MaxFrame    uint64 `cbor:"6,keyasint,omitempty"`
	// MaxInflight is how many calls the node runs at once per connection;
	// it refuses more. 0: no limit announced.
	MaxInflight uint64 `cbor:"7,keyasint,omitempty"`
	// Nodes are the live nodes' addresses, as the node knows them.
	Nodes []string `cbor:"8,keyasint,omitempty"`
}

// callMsg is a call's request body.
type callMsg struct {
	Component string `cbor:"1,keyasint"`
	ID        string `cbor:"2,keyasint"`
	Method    string `cbor:"3,keyasint"`
	// Args is the CBOR encoding of the argument, carried as a byte
	// string: the envelope decodes in time independent of the payload,
	// which is validated once, where it is decoded.
	Args   []byte `cbor:"4,keyasint,omitempty"`
	Client []byte `cbor:"5,keyasint,omitempty"`
	Seq    uint64 `cbor:"6,keyasint,omitempty"`
	Ack    uint64 `cbor:"7,keyasint,omitempty"`
	// Timeout is the time left until the caller's deadline, in
	// microseconds; 0 means none. Relative, so clocks need not agree.
	Timeout int64 `cbor:"8,keyasint,omitempty"`
}

// replyMsg is a call's (or a nodes request's) reply body.
type replyMsg struct {
	Result  []byte   `cbor:"1,keyasint,omitempty"` // CBOR, as a byte string (see callMsg.Args)
	Code    string   `cbor:"2,keyasint,omitempty"`
	Message string   `cbor:"3,keyasint,omitempty"`
	Addr    string   `cbor:"4,keyasint,omitempty"`
	Nodes   []string `cbor:"5,keyasint,omitempty"`
}

var (
	frameEnc = func() cbor.UserBufferEncMode {
		m, err := cbor.EncOptions{IndefLength: cbor.IndefLengthForbidden}.UserBufferEncMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	frameDec = func() cbor.DecMode {
		m, err := cbor.DecOptions{
			DupMapKey:        cbor.DupMapKeyEnforcedAPF,
			IndefLength:      cbor.IndefLengthForbidden,
			MaxNestedLevels:  registry.MaxNestedLevels,
			MaxArrayElements: registry.MaxArrayElements,
			MaxMapPairs:      registry.MaxMapPairs,
			DefaultMapType:   reflect.TypeOf(map[string]any(nil)),
		}.DecMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
)

// Frame buffers are recycled: a frame handed to a frameWriter belongs to it,
// and it releases the frame once copied; a body read by readFrame is
// released by its reader once decoded (decoding copies what it keeps).
var frameBufs sync.Pool // of []byte

const maxPooled = 64 << 10

func getFrameBuf(n int) []byte {
	if b, ok := frameBufs.Get().([]byte); ok && cap(b) >= n {
		return b[:n]
	}
	return make([]byte, n, max(n, 2048))
}

// releaseFrame returns a frame's buffer for reuse; the caller must not
// touch it afterwards.
func releaseFrame(b []byte) {
	if b != nil && cap(b) <= maxPooled {
		frameBufs.Put(b[:0]) //nolint:staticcheck // SA6002: a slice header is cheaper than the buffer it recycles
	}
}

// encodeFrame returns header and CBOR body of v in one slice.
func encodeFrame(kind byte, id uint64, v any) ([]byte, error) {
	buf := bytes.NewBuffer(getFrameBuf(headerSize))
	if v != nil {
		if err := frameEnc.MarshalToBuffer(v, buf); err != nil {
			return nil, err
		}
	}
	b := buf.Bytes()
	putHeader(b, header{length: uint32(len(b) - headerSize), kind: kind, id: id})
	return b, nil
}

// emptyFrame returns a frame with no body.
func emptyFrame(kind byte, id uint64) []byte {
	b := getFrameBuf(headerSize)
	putHeader(b, header{kind: kind, id: id})
	return b
}

// frameTooLarge reports a frame whose declared length exceeds the limit.
type frameTooLarge struct {
	header
	max int
}

func (e *frameTooLarge) Error() string {
	return fmt.Sprintf("frame of %d bytes exceeds the limit of %d", e.length, e.max)
}

// readFrame reads one frame. A frame over max is not read: the error is a
// *frameTooLarge carrying its header, and the body is still on the wire.
// The body may be given back with releaseFrame once it is decoded.
func readFrame(r *bufio.Reader, max int) (header, []byte, error) {
	var hb [headerSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return header{}, nil, err
	}
	h := parseHeader(hb[:])
	if int64(h.length) > int64(max) {
		return h, nil, &frameTooLarge{header: h, max: max}
	}
	if h.length == 0 {
		return h, nil, nil
	}
	body := getFrameBuf(int(h.length))
	if _, err := io.ReadFull(r, body); err != nil {
		return h, nil, fmt.Errorf("truncated frame: %w", err)
	}
	return h, body, nil
}

// decodeBody decodes a frame body with the bounded decoder.
func decodeBody(body []byte, v any) error {
	if len(body) == 0 {
		return fmt.Errorf("empty frame body")
	}
	return frameDec.Unmarshal(body, v)
}
