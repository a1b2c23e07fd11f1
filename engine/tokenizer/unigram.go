package tokenizer

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// unkPenalty is how much less than the least likely piece an unknown
// character scores (tokenizers' and SentencePiece's kUnkPenalty).
const unkPenalty = 10.0

// unigram is a SentencePiece Unigram model: pieces with log-probability
// scores, segmented by the Viterbi best path.
type unigram struct {
	pieces   []string
	scores   []float64
	ids      map[string]int32
	unk      int32
	unkScore float64
	// maxPiece is the longest piece in bytes.
	maxPiece int
}

// newUnigram indexes a vocabulary (id = position) with unknown id unk.
func newUnigram(pieces []string, scores []float64, unk int) (*unigram, error) {
	if len(pieces) == 0 {
		return nil, errors.New("empty vocabulary")
	}
	if unk < 0 || unk >= len(pieces) {
		return nil, fmt.Errorf("unk_id %d outside the vocabulary of %d pieces", unk, len(pieces))
	}
	u := &unigram{pieces: pieces, scores: scores, ids: make(map[string]int32, len(pieces)), unk: int32(unk)}
	minScore := math.Inf(1)
	for i, p := range pieces {
		if p == "" {
			return nil, fmt.Errorf("piece %d is empty", i)
		}
		if math.IsNaN(scores[i]) || math.IsInf(scores[i], 0) {
			return nil, fmt.Errorf("piece %d (%q) has score %v", i, p, scores[i])
		}
		u.ids[p] = int32(i) // the last of duplicates wins, as in tokenizers
		minScore = min(minScore, scores[i])
		u.maxPiece = max(u.maxPiece, len(p))
	}
	u.unkScore = minScore - unkPenalty
	return u, nil
}

// node is the best path ending at a byte position.
type node struct {
	score float64
	start int // -1: unreached
	id    int32
}

// encode appends the ids of the best segmentation of piece to ids, as
// tokenizers' Unigram::encode_optimized computes it: candidates in order
// of start position then length, a later candidate winning only with a
// strictly higher score; a character no piece starts with scores
// unkScore, and runs of unknown characters fuse into one unknown id.
func (u *unigram) encode(ids []int, piece string) []int {
	n := len(piece)
	if n == 0 {
		return ids
	}
	best := make([]node, n+1)
	for i := range best {
		best[i].start = -1
	}
	best[0].start = 0
	for at := 0; at < n; {
		_, mb := utf8.DecodeRuneInString(piece[at:])
		base := best[at].score
		single := false
		for end := at + 1; end <= n && end-at <= u.maxPiece; end++ {
			id, ok := u.ids[piece[at:end]]
			if !ok {
				continue
			}
			s := base + u.scores[id]
			if t := &best[end]; t.start < 0 || s > t.score {
				t.score, t.start, t.id = s, at, id
			}
			if end-at == mb {
				single = true
			}
		}
		if !single {
			s := base + u.unkScore
			if t := &best[at+mb]; t.start < 0 || s > t.score {
				t.score, t.start, t.id = s, at, u.unk
			}
		}
		at += mb
	}
	// Backtrack, fusing consecutive unknowns.
	var rev []int32
	for end := n; end > 0; {
		nd := best[end]
		if nd.id == u.unk && len(rev) > 0 && rev[len(rev)-1] == u.unk {
			end = nd.start
			continue
		}
		rev = append(rev, nd.id)
		end = nd.start
	}
	for i := len(rev) - 1; i >= 0; i-- {
		ids = append(ids, int(rev[i]))
	}
	return ids
}
