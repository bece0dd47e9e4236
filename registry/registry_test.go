package registry_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/registry"
)

type good struct {
	Name    string
	Tags    map[string][]int
	When    time.Time
	Nested  *good
	Conn    chan int `cbor:"-"`
	scratch []byte   `cbor:"-"`
}

type withChan struct {
	Name    string
	Updates chan string
}

type withFunc struct{ OnDone func() }

type withIface struct{ Payload any }

type withUnexported struct {
	Items []string
	cache map[string]int
}

type withNestedChan struct {
	Inner struct{ Sink []chan int }
}

type withFile struct {
	F *os.File
}

func noop(*good, context.Context, int) (int, error) { return 0, nil }

func TestRegisterRefusesStateThatCannotSurviveFailover(t *testing.T) {
	for _, tc := range []struct {
		def  registry.Definition
		want string
	}{
		{registry.NewType[withChan]("c", registry.Options{}), "withChan.Updates"},
		{registry.NewType[withFunc]("c", registry.Options{}), "withFunc.OnDone"},
		{registry.NewType[withIface]("c", registry.Options{}), "withIface.Payload"},
		{registry.NewType[withUnexported]("c", registry.Options{}), "withUnexported.cache"},
		{registry.NewType[withNestedChan]("c", registry.Options{}), "Inner.Sink"},
		{registry.NewType[withFile]("c", registry.Options{}), "withFile.F"},
		{registry.NewType[int]("c", registry.Options{}), "not a struct"},
		{registry.NewType[good]("bad name!", registry.Options{}), "invalid component name"},
	} {
		err := registry.New().Register(tc.def)
		require.Error(t, err, tc.want)
		assert.ErrorContains(t, err, tc.want)
	}
	err := registry.New().Register(registry.NewType[withChan]("c", registry.Options{}))
	assert.ErrorContains(t, err, "cbor:\"-\"", "the error says how to fix it")
}

func TestRegisterAcceptsTransientAndDetectsDuplicates(t *testing.T) {
	r := registry.New()
	typ := registry.NewType[good]("good", registry.Options{})
	registry.NewMethod(typ, "Do", noop)
	require.NoError(t, r.Register(typ))
	assert.ErrorContains(t, r.Register(typ), "already registered")
	c, ok := r.Lookup("good")
	require.True(t, ok)
	assert.Equal(t, []string{"Do"}, c.Methods())
	assert.Equal(t, []string{"good"}, r.Names())

	dup := registry.NewType[good]("dup", registry.Options{})
	registry.NewMethod(dup, "Do", noop)
	registry.NewMethod(dup, "Do", noop)
	assert.ErrorContains(t, registry.New().Register(dup), "declared twice")
}

type counter struct{ N int }

func (c *counter) Add(_ context.Context, by int) (int, error) { c.N += by; return c.N, nil }
func (c *counter) Get(context.Context) (int, error)           { return c.N, nil }

func TestArgsDecoding(t *testing.T) {
	typ := registry.NewType[counter]("counter", registry.Options{})
	registry.NewMethod(typ, "Add", (*counter).Add)
	registry.NewMethod0(typ, "Get", (*counter).Get)
	r := registry.New()
	require.NoError(t, r.Register(typ))
	c, _ := r.Lookup("counter")
	add, _ := c.Method("Add")
	get, _ := c.Method("Get")

	five, _ := registry.Marshal(5)
	a, err := add.DecodeArgs(five)
	require.NoError(t, err)
	s := c.NewState()
	out, err := add.Invoke(context.Background(), s, a)
	require.NoError(t, err)
	var n int
	require.NoError(t, registry.Unmarshal(out, &n))
	assert.Equal(t, 5, n)

	text, _ := registry.Marshal("five")
	for name, b := range map[string][]byte{"missing": nil, "wrong type": text, "malformed": {0xff}, "truncated": {0x82, 0x01}} {
		_, err := add.DecodeArgs(b)
		assert.Equal(t, registry.CodeBadRequest, registry.CodeOf(err), name)
	}
	for _, b := range [][]byte{nil, {0xf6}, {0xa0}} {
		_, err := get.DecodeArgs(b)
		assert.NoError(t, err, "no argument, null or {} for a method without one")
	}
	_, err = get.DecodeArgs(five)
	assert.Equal(t, registry.CodeBadRequest, registry.CodeOf(err))
}

func TestDeterministicStateEncoding(t *testing.T) {
	typ := registry.NewType[good]("good", registry.Options{})
	r := registry.New()
	require.NoError(t, r.Register(typ))
	c, _ := r.Lookup("good")
	s := &good{Name: "x", Tags: map[string][]int{}}
	for i := range 100 {
		s.Tags[string(rune('a'+i%26))+string(rune('a'+i/26))] = []int{i}
	}
	first, err := c.EncodeState(s)
	require.NoError(t, err)
	for range 20 {
		again, err := c.EncodeState(s)
		require.NoError(t, err)
		require.Equal(t, first, again, "map order must not change the encoding")
	}
}

func TestRollbackKeepsTransientFields(t *testing.T) {
	typ := registry.NewType[good]("good", registry.Options{})
	r := registry.New()
	require.NoError(t, r.Register(typ))
	c, _ := r.Lookup("good")
	ch := make(chan int)
	s := &good{Name: "committed", Conn: ch}
	committed, err := c.EncodeState(s)
	require.NoError(t, err)
	s.Name = "changed by a failed call"
	s.Tags = map[string][]int{"x": {1}}
	back, err := c.Rollback(s, committed)
	require.NoError(t, err)
	g := back.(*good)
	assert.Equal(t, "committed", g.Name)
	assert.Nil(t, g.Tags)
	assert.Equal(t, ch, g.Conn)
}

type cartV1 struct{ Items []string }

type cartV2 struct{ Items map[string]int }

func TestStateUpgrade(t *testing.T) {
	typ := registry.NewType[cartV2]("cart", registry.Options{
		StateVersion: 2,
		Upgrade: func(from int, data []byte) ([]byte, error) {
			if from != 1 {
				return nil, errors.New("unknown version")
			}
			var old cartV1
			if err := registry.Unmarshal(data, &old); err != nil {
				return nil, err
			}
			next := cartV2{Items: map[string]int{}}
			for _, it := range old.Items {
				next.Items[it]++
			}
			return registry.Marshal(next)
		},
	})
	r := registry.New()
	require.NoError(t, r.Register(typ))
	c, _ := r.Lookup("cart")
	old, _ := registry.Marshal(cartV1{Items: []string{"apple", "apple", "pear"}})
	s, err := c.DecodeState(old, 1)
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"apple": 2, "pear": 1}, s.(*cartV2).Items)

	_, err = c.DecodeState(old, 3)
	assert.Equal(t, registry.CodeUnavailable, registry.CodeOf(err), "newer state: let a newer node take it")
	fresh, err := c.DecodeState(nil, 0)
	require.NoError(t, err)
	assert.Nil(t, fresh.(*cartV2).Items)
}

func TestErrorCodes(t *testing.T) {
	assert.Equal(t, registry.CodeDeadlineExceeded, registry.CodeOf(context.DeadlineExceeded))
	assert.Equal(t, registry.CodeCanceled, registry.CodeOf(context.Canceled))
	assert.Equal(t, registry.CodeInternal, registry.CodeOf(errors.New("x")))
	assert.Equal(t, registry.Code(""), registry.CodeOf(nil))
	cause := errors.New("root")
	e := registry.Errorf(registry.CodeUnavailable, "wrapped: %w", cause)
	assert.ErrorIs(t, e, cause)
	assert.True(t, e.Code.Retryable())
	assert.False(t, registry.CodeApplication.Retryable())
	assert.Equal(t, "redirect: owned elsewhere (10.0.0.1:7401)", (&registry.Error{Code: registry.CodeRedirect, Message: "owned elsewhere", Addr: "10.0.0.1:7401"}).Error())
}
