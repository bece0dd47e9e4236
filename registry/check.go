package registry

import (
	"fmt"
	"math/big"
	"reflect"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

var (
	marshalerType       = reflect.TypeFor[cbor.Marshaler]()
	unmarshalerType     = reflect.TypeFor[cbor.Unmarshaler]()
	binaryMarshalerType = reflect.TypeFor[interface{ MarshalBinary() ([]byte, error) }]()
	binaryUnmarshalType = reflect.TypeFor[interface{ UnmarshalBinary([]byte) error }]()
	bigIntType          = reflect.TypeFor[big.Int]()
)

// transient reports whether a struct field is skipped by the CBOR encoder,
// which reads the cbor tag and falls back to the json tag.
func transient(f reflect.StructField) bool {
	tag, ok := f.Tag.Lookup("cbor")
	if !ok {
		tag = f.Tag.Get("json")
	}
	return tag == "-"
}

// selfCoding reports whether t encodes and decodes itself.
func selfCoding(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	if (t.Implements(marshalerType) || p.Implements(marshalerType)) && p.Implements(unmarshalerType) {
		return true
	}
	if (t.Implements(binaryMarshalerType) || p.Implements(binaryMarshalerType)) && p.Implements(binaryUnmarshalType) {
		return true
	}
	return t == bigIntType
}

// checker walks a type and reports the first part that cannot make a round
// trip through CBOR. For state types it is strict: unexported fields must be
// marked transient, since they would silently vanish on failover.
type checker struct {
	state bool
	seen  map[reflect.Type]bool
}

// checkType returns an error naming the first field of t, reached by path,
// that cannot survive an encode/decode round trip.
func checkType(t reflect.Type, state bool) error {
	c := checker{state: state, seen: map[reflect.Type]bool{}}
	return c.walk(t, t.Name())
}

func (c *checker) walk(t reflect.Type, path string) error {
	if c.seen[t] {
		return nil
	}
	if selfCoding(t) {
		return nil
	}
	switch t.Kind() {
	case reflect.Bool, reflect.String,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return nil
	case reflect.Pointer:
		c.seen[t] = true
		return c.walk(t.Elem(), path)
	case reflect.Slice, reflect.Array:
		c.seen[t] = true
		return c.walk(t.Elem(), path+"[]")
	case reflect.Map:
		c.seen[t] = true
		if err := c.walk(t.Key(), path+"[key]"); err != nil {
			return err
		}
		return c.walk(t.Elem(), path+"[value]")
	case reflect.Struct:
		c.seen[t] = true
		for i := range t.NumField() {
			f := t.Field(i)
			if transient(f) {
				continue
			}
			fpath := path + "." + f.Name
			if !f.IsExported() && !f.Anonymous {
				if c.state {
					return fmt.Errorf("field %s is unexported, so it would be lost on failover: export it, or tag it `cbor:\"-\"` to make it transient and rebuild it in OnActivate", fpath)
				}
				continue
			}
			if err := c.walk(f.Type, fpath); err != nil {
				return err
			}
		}
		return nil
	case reflect.Interface:
		return fmt.Errorf("field %s has interface type %s, whose concrete type would be lost on failover: use a concrete type or cbor.RawMessage, or tag it `cbor:\"-\"` to make it transient", path, t)
	}
	what := strings.ToLower(t.Kind().String()) + "s"
	return fmt.Errorf("field %s has type %s, and %s cannot be persisted: tag it `cbor:\"-\"` to make it transient and rebuild it in OnActivate", path, t, what)
}
