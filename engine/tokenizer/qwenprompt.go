package tokenizer

import "strings"

// PromptTemplate is how a pipeline wraps a prompt before its LLM text
// encoder reads it: the templated text is Prefix + prompt + Suffix,
// tokenized with truncation to MaxLength (and, with Pad, padded to it); the
// encoder's hidden states of the first Drop tokens are then discarded.
type PromptTemplate struct {
	Prefix, Suffix string
	// Drop is the number of leading tokens (the template's prefix) whose
	// hidden states the pipeline drops.
	Drop int
	// MaxLength is the tokenizer's max_length, Drop included.
	MaxLength int
	// Keep is how many hidden states the pipeline keeps after the dropped
	// ones at most (its max_sequence_length); 0 for no limit beyond
	// MaxLength.
	Keep int
	// Pad: padding="max_length" (Z-Image); otherwise padding only to the
	// longest prompt of the batch, none for one prompt (Qwen-Image).
	Pad bool
}

// Kept returns the range [from, to) of the hidden states, of n tokens,
// that the pipeline passes on to its transformer (before its padding mask
// selects the valid ones).
func (t PromptTemplate) Kept(n int) (from, to int) {
	from, to = min(t.Drop, n), n
	if t.Keep > 0 {
		to = min(to, from+t.Keep)
	}
	return from, to
}

// Apply returns the templated text of prompt.
func (t PromptTemplate) Apply(prompt string) string { return t.Prefix + prompt + t.Suffix }

// Qwen3Chat returns the text of Qwen3's chat template for one user message
// with the generation prompt, as transformers' apply_chat_template renders
// it with tokenize=False, add_generation_prompt=True and enable_thinking:
// Qwen3 has no default system prompt, and enable_thinking=False appends an
// empty "<think>\n\n</think>\n\n" block, while True (the default, and
// Z-Image's) leaves the thinking to the model and adds nothing.
func Qwen3Chat(prompt string, thinking bool) string {
	s := "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n"
	if !thinking {
		s += "<think>\n\n</think>\n\n"
	}
	return s
}

// ZImageTemplate is diffusers' ZImagePipeline prompt: Qwen3's chat
// template with enable_thinking=True (Qwen3Chat(prompt, true)), tokenized
// with padding="max_length", max_length=512 and truncation, nothing
// dropped (the padding is left out by the attention mask). ComfyUI's
// Z-Image text encoder (comfy/text_encoders/z_image.py) writes the same
// template by hand, tokenizes it without padding or truncation, and loads
// the same qwen25_tokenizer folder as Qwen-Image, which NewQwen25
// reproduces: that differs from Qwen3's tokenizer (NewQwen3, diffusers')
// only on prompts holding <tool_response>, </tool_response>, <think> or
// </think>, plain text there (ComfyZImage).
var ZImageTemplate = PromptTemplate{
	Prefix:    "<|im_start|>user\n",
	Suffix:    "<|im_end|>\n<|im_start|>assistant\n",
	MaxLength: 512,
	Pad:       true,
}

// qwenImageSystem is the system prompt of Qwen-Image's template.
const qwenImageSystem = "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of the objects and background:"

// QwenImageTemplate is diffusers' QwenImagePipeline prompt
// (prompt_template_encode): a system message, then the user's, then the
// assistant's turn, tokenized with max_length=1024+34 and truncation; the
// 34 tokens before the user's text (prompt_template_encode_start_idx:
// "<|im_start|>system\n", the system prompt, "<|im_end|>\n<|im_start|>user\n")
// are dropped, and of the rest the pipeline call keeps at most
// max_sequence_length, 512 by default (up to 1024). ComfyUI's QwenImageTokenizer uses the same template but finds
// the tokens to drop in the ids (ComfyQwenImageDrop), tokenizes without
// truncation, and leaves a prompt that starts with "<|im_start|>" as it is
// (ComfyQwenImage).
var QwenImageTemplate = PromptTemplate{
	Prefix:    "<|im_start|>system\n" + qwenImageSystem + "<|im_end|>\n<|im_start|>user\n",
	Suffix:    "<|im_end|>\n<|im_start|>assistant\n",
	Drop:      34,
	MaxLength: 1024 + 34,
	Keep:      512,
}

// EncodeTemplate tokenizes the templated prompt as the template's pipeline
// does; see PromptTemplate.
func (q *Qwen) EncodeTemplate(t PromptTemplate, prompt string) (ids, mask []int) {
	return q.Encode(t.Apply(prompt), t.MaxLength, t.Pad)
}

// ComfyQwenImage returns the text ComfyUI's QwenImageTokenizer tokenizes
// for prompt: the prompt itself if it starts with "<|im_start|>" (or
// Llama's "<|start_header_id|>"), else QwenImageTemplate applied to it;
// then, weights being disabled, only the escaped parentheses \( and \)
// become plain ones. (ComfyUI also cuts the text before each
// " embedding:" or "\nembedding:" to look up a textual-inversion embedding,
// dropping that space or newline; that is left to the caller.)
func ComfyQwenImage(prompt string) string {
	if !strings.HasPrefix(prompt, "<|im_start|>") && !strings.HasPrefix(prompt, "<|start_header_id|>") {
		prompt = QwenImageTemplate.Apply(prompt)
	}
	return unescapeParens(escapeParens(prompt))
}

// ComfyQwenImageDrop returns how many leading tokens of ids ComfyUI's
// Qwen-Image text encoder drops (its template_end): the index of the second
// <|im_start|> (151644; of the first if there is one), moved past the
// "user" "\n" tokens (872, 198) that follow it if they do and more than
// three tokens remain. With QwenImageTemplate that is 34, as in diffusers.
// Without any <|im_start|> ComfyUI slices from index -1, keeping only the
// last token: then the result is len(ids)-1 (unless ids start with
// "user" "\n", when it is 2).
func ComfyQwenImageDrop(ids []int) int {
	const imStart, user, newline = 151644, 872, 198
	end, seen := -1, 0
	for i, id := range ids {
		if id == imStart && seen < 2 {
			end = i
			seen++
		}
	}
	if len(ids) > end+3 && ids[end+1] == user && ids[end+2] == newline {
		end += 3
	}
	if end < 0 {
		return max(len(ids)-1, 0)
	}
	return end
}

// ComfyZImage returns the text ComfyUI's Z-Image tokenizer tokenizes for
// prompt: ZImageTemplate applied to it (ComfyUI writes the same template by
// hand) and, weights being disabled, only the escaped parentheses \( and \)
// made plain ones; it tokenizes that without padding or truncation.
func ComfyZImage(prompt string) string {
	return unescapeParens(escapeParens(ZImageTemplate.Apply(prompt)))
}
