package sampling

// The step scaffold. Every sampler is a per-step update driven by
// run.loop, which owns what all of them share: the loop over the sigmas,
// the model evaluation at the start of each step (run.denoise: the context
// check, the output length check and the error wrapping) and the callback.
// A sampler supplies a stepper, with whatever state its method carries
// (the history of a multistep method).

// stepper is a sampler's update for one step. step advances x, the latent
// at sigma i, to sigma i+1 given den, the model's estimate at the start of
// the step. It may overwrite x, return den itself (the callback then sees
// the same slice as X and Denoised), and evaluate the model again through
// run.denoise (heun, dpm_2, dpmpp_2s_ancestral, dpmpp_sde).
type stepper interface {
	step(i int, x, den []float32) ([]float32, error)
}

// stepFunc is a stepper whose state, if any, lives in the closure.
type stepFunc func(i int, x, den []float32) ([]float32, error)

func (f stepFunc) step(i int, x, den []float32) ([]float32, error) { return f(i, x, den) }

// inputStepper is a stepper that evaluates the model somewhere other than
// at its state x: input returns the latent the model sees at step i (UniPC
// evaluates at its predictor's output, converted to the sigma frame).
type inputStepper interface {
	stepper
	input(i int, x []float32) ([]float32, error)
}

// viewStepper is a stepper whose state is not what the callback shows:
// view returns the StepInfo latent and estimate for step i, given the state
// after the step and the model output (UniPC: its variance-preserving
// latent converted back to the sigma frame, and its data prediction). It is
// called only when there is a callback.
type viewStepper interface {
	stepper
	view(i int, x, den []float32) (latent, denoised []float32)
}

// loop runs st over the run's steps from x, evaluating the model at
// sigmas[i] on step i: r.sigmas, or a modified copy (the SDE samplers'
// sdeSigmas, UniPC's final 0.001). StepInfo.Sigma is r.sigmas[i] either
// way.
func (r *run) loop(sigmas, x []float32, st stepper) ([]float32, error) {
	in, _ := st.(inputStepper)
	vw, _ := st.(viewStepper)
	for i := 0; i < r.steps(); i++ {
		at := x
		if in != nil {
			var err error
			if at, err = in.input(i, x); err != nil {
				return nil, err
			}
		}
		den, err := r.denoise(at, sigmas[i])
		if err != nil {
			return nil, err
		}
		if x, err = st.step(i, x, den); err != nil {
			return nil, err
		}
		if r.cb != nil {
			latent, denoised := x, den
			if vw != nil {
				latent, denoised = vw.view(i, x, den)
			}
			r.report(i, latent, denoised)
		}
	}
	return x, nil
}
