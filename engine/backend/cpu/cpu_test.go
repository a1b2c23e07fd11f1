package cpu_test

import (
	"testing"

	"github.com/darkroom-ai/darkroom/engine/backend"
	"github.com/darkroom-ai/darkroom/engine/backend/backendtest"
	"github.com/darkroom-ai/darkroom/engine/backend/cpu"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func() backend.Device { return cpu.New() }, 2e-5)
}
