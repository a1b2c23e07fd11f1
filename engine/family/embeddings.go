package family

// Embeddings resolves textual-inversion embeddings by name for one text
// encoder: slot names the encoder ("clip_l", "clip_g", "clip_h"), width its
// hidden size. The engine implements it over its embeddings folders; a
// family hands it to its prompt encoders (clip.PromptEncoder.Embeddings).
type Embeddings interface {
	// Vectors returns the embedding's input vectors for the encoder, each
	// width values, or an error naming what was looked for.
	Vectors(name, slot string, width int) ([][]float32, error)
}

// EmbeddingsFor returns the lookup a clip.PromptEncoder takes for one
// encoder, or nil when e is nil (the "embedding:" syntax is then text).
func EmbeddingsFor(e Embeddings, slot string, width int) func(name string) ([][]float32, error) {
	if e == nil {
		return nil
	}
	return func(name string) ([][]float32, error) { return e.Vectors(name, slot, width) }
}
