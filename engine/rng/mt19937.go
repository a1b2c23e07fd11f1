package rng

// mt19937 is the 32-bit Mersenne Twister (Matsumoto and Nishimura, 1998) with
// the standard parameters, seeded the way PyTorch's CPU generator seeds it.
type mt19937 struct {
	state [mtN]uint32
	next  int // index of the next word of state to temper; mtN means "twist first"
}

const (
	mtN         = 624
	mtM         = 397
	mtMatrixA   = 0x9908b0df
	mtUpperMask = 0x80000000
	mtLowerMask = 0x7fffffff
)

// seed initialises the state from the low 32 bits of seed. PyTorch keeps the
// full 64-bit seed for Generator.initial_seed() but feeds only seed&0xffffffff
// to the engine, so seeds that differ only above bit 31 give the same stream.
func (m *mt19937) seed(seed uint64) {
	m.state[0] = uint32(seed)
	for i := 1; i < mtN; i++ {
		prev := m.state[i-1]
		m.state[i] = 1812433253*(prev^(prev>>30)) + uint32(i)
	}
	m.next = mtN
}

// twist regenerates the whole state block.
func (m *mt19937) twist() {
	s := &m.state
	for i := 0; i < mtN; i++ {
		y := s[i]&mtUpperMask | s[(i+1)%mtN]&mtLowerMask
		v := s[(i+mtM)%mtN] ^ y>>1
		if y&1 != 0 {
			v ^= mtMatrixA
		}
		s[i] = v
	}
	m.next = 0
}

// uint32 returns the next tempered output word.
func (m *mt19937) uint32() uint32 {
	if m.next >= mtN {
		m.twist()
	}
	y := m.state[m.next]
	m.next++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}
