// Package all registers every model family: the engine imports it for its
// side effects. Adding a family is one folder under engine/families and one
// line here.
package all

import (
	// Each import registers one family (family.Register in its init).
	_ "github.com/darkroom-ai/darkroom/engine/families/auraflow"
	_ "github.com/darkroom-ai/darkroom/engine/families/chroma"
	_ "github.com/darkroom-ai/darkroom/engine/families/flux1"
	_ "github.com/darkroom-ai/darkroom/engine/families/flux2"
	_ "github.com/darkroom-ai/darkroom/engine/families/hidream"
	_ "github.com/darkroom-ai/darkroom/engine/families/hunyuanvideo"
	_ "github.com/darkroom-ai/darkroom/engine/families/ltx"
	_ "github.com/darkroom-ai/darkroom/engine/families/qwenimage"
	_ "github.com/darkroom-ai/darkroom/engine/families/sd1"
	_ "github.com/darkroom-ai/darkroom/engine/families/sd2"
	_ "github.com/darkroom-ai/darkroom/engine/families/sd3"
	_ "github.com/darkroom-ai/darkroom/engine/families/sdxl"
	_ "github.com/darkroom-ai/darkroom/engine/families/wan"
	_ "github.com/darkroom-ai/darkroom/engine/families/zimage"
)
