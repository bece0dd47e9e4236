package container

import (
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCompletionsBounds(t *testing.T) {
	var c completions
	var err error
	rec := func(client string, seq uint64) completion {
		return completion{Client: []byte(client), Seq: seq, Reply: []byte("r")}
	}
	c, err = c.with(rec("a", 1), 0, 2, 1<<10)
	require.NoError(t, err)
	c, err = c.with(rec("b", 1), 0, 2, 1<<10)
	require.NoError(t, err)
	assert.False(t, c.evictedBelow([]byte("a"), 1))

	c, err = c.with(rec("c", 1), 0, 2, 1<<10)
	require.NoError(t, err)
	assert.Equal(t, 2, c.len())
	_, ok := c.lookup([]byte("a"), 1)
	assert.False(t, ok, "the oldest record went")
	assert.True(t, c.evictedBelow([]byte("a"), 1), "and left an evicted watermark")
	assert.False(t, c.evictedBelow([]byte("a"), 2), "later calls are not affected")

	// a acknowledges call 1 with its next call: the evicted mark goes, the
	// stale rule takes over.
	c, err = c.with(rec("a", 2), 2, 2, 1<<10)
	require.NoError(t, err)
	assert.False(t, c.evictedBelow([]byte("a"), 1))
	assert.True(t, c.stale([]byte("a"), 1))

	// The byte bound keeps at least the newest record.
	big := completion{Client: []byte("d"), Seq: 1, Reply: make([]byte, 4096)}
	c, err = c.with(big, 0, 8, 1<<10)
	require.NoError(t, err)
	assert.Equal(t, 1, c.len())
	assert.True(t, c.evictedBelow([]byte("b"), 1))
	assert.True(t, c.evictedBelow([]byte("c"), 1))
	assert.True(t, c.evictedBelow([]byte("a"), 2), "unacknowledged, evicted")
	assert.False(t, c.evictedBelow([]byte("d"), 1))
}

func TestCompletionsDecodeV1(t *testing.T) {
	b, err := cbor.Marshal(storedV1{Recs: []completion{{Client: []byte("a"), Seq: 1, Reply: []byte("r")}}, Acked: []watermark{{Client: []byte("a"), Below: 1}}})
	require.NoError(t, err)
	c, err := decodeCompletions(b)
	require.NoError(t, err)
	_, ok := c.lookup([]byte("a"), 1)
	assert.True(t, ok)
	assert.True(t, c.stale([]byte("a"), 0))

	_, err = decodeCompletions([]byte{0x83, 0x01})
	assert.Error(t, err)
}
