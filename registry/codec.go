package registry

import (
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// Decoding limits. They bound the work and memory an untrusted payload can
// cost; the frame size limit of the wire protocol bounds the rest.
const (
	MaxNestedLevels  = 32
	MaxArrayElements = 1 << 20
	MaxMapPairs      = 1 << 20
)

var (
	// encMode is deterministic (sorted map keys, definite lengths) so that
	// equal states encode to equal bytes: an unchanged state is detected by
	// comparing encodings and costs no write.
	encMode = mustEnc(cbor.EncOptions{
		Sort:        cbor.SortBytewiseLexical,
		IndefLength: cbor.IndefLengthForbidden,
		Time:        cbor.TimeRFC3339Nano,
	})

	// wireEnc encodes arguments and replies: the same, but with map keys
	// in whatever order, since nothing compares their bytes (sorting a
	// map's keys costs as much as encoding it).
	wireEnc = mustEnc(cbor.EncOptions{
		IndefLength: cbor.IndefLengthForbidden,
		Time:        cbor.TimeRFC3339Nano,
	})

	// replyDec decodes replies on the client. It skips the duplicate-key
	// tracking of the node-side decoders (replies come from the node the
	// client chose to trust) and tolerates unknown fields, so that a newer
	// node's reply reaches an older client.
	replyDec = mustDec(cbor.DecOptions{
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  MaxNestedLevels,
		MaxArrayElements: MaxArrayElements,
		MaxMapPairs:      MaxMapPairs,
		DefaultMapType:   reflect.TypeOf(map[string]any(nil)),
	})

	// argsDec is strict: unknown fields, duplicate keys and indefinite
	// lengths are errors, which catches typos in hand-written JSON args.
	argsDec = mustDec(cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   MaxNestedLevels,
		MaxArrayElements:  MaxArrayElements,
		MaxMapPairs:       MaxMapPairs,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		DefaultMapType:    reflect.TypeOf(map[string]any(nil)),
	})

	// stateDec tolerates unknown fields so that a node can read state
	// written by a newer build that added a field (rolling upgrades).
	stateDec = mustDec(cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  MaxNestedLevels,
		MaxArrayElements: MaxArrayElements,
		MaxMapPairs:      MaxMapPairs,
		DefaultMapType:   reflect.TypeOf(map[string]any(nil)),
	})
)

func mustEnc(o cbor.EncOptions) cbor.EncMode {
	m, err := o.EncMode()
	if err != nil {
		panic(err)
	}
	return m
}

func mustDec(o cbor.DecOptions) cbor.DecMode {
	m, err := o.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}

// Marshal encodes v as deterministic CBOR, the encoding used for arguments,
// replies and state.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// Unmarshal decodes CBOR data into v with the strict, bounded decoder used
// for arguments and replies.
func Unmarshal(data []byte, v any) error { return argsDec.Unmarshal(data, v) }

// Wellformed reports whether data is one well-formed CBOR item within the
// decoding limits.
func Wellformed(data []byte) error { return argsDec.Wellformed(data) }
