package tui

import (
	"fmt"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
)

// devicesMsg carries a sample of the host and GPU statistics.
type devicesMsg struct {
	Host    HostStat
	HostErr error
	GPUs    []GPUStat
	GPUErr  error
}

// devicesInterval is how often the devices pane refreshes.
const devicesInterval = time.Second

// sampleDevices returns a command that samples the devices after delay.
func sampleDevices(host *hostSampler, gpu GPUStatsProvider, delay time.Duration) tea.Cmd {
	return tea.Tick(delay, func(time.Time) tea.Msg {
		var m devicesMsg
		m.Host, m.HostErr = host.Sample()
		if gpu != nil {
			m.GPUs, m.GPUErr = gpu.GPUStats()
		}
		return m
	})
}

// DevicesPane shows per-GPU VRAM gauges, utilisation, temperature and
// power, or the host's CPU and memory when there is no GPU.
type DevicesPane struct {
	c     *Common
	stats devicesMsg
	valid bool
}

// NewDevicesPane returns a pane with no sample yet.
func NewDevicesPane(c *Common) *DevicesPane { return &DevicesPane{c: c} }

// Set stores a new sample.
func (d *DevicesPane) Set(m devicesMsg) { d.stats, d.valid = m, true }

// Height is the number of content rows the pane wants.
func (d *DevicesPane) Height() int { return 2 + 2*len(d.stats.GPUs) }

// Rows renders the pane's content for inner width iw.
func (d *DevicesPane) Rows(iw int) []string {
	s := d.c.Styles
	if !d.valid {
		return []string{s.Muted.Render("sampling…")}
	}
	var out []string
	for _, g := range d.stats.GPUs {
		info := fmt.Sprintf(" %3.0f%% %2.0f°C", g.Util, g.TempC)
		if g.PowerW > 0 {
			info += fmt.Sprintf(" %.0fW", g.PowerW)
		}
		out = append(out, s.Label.Render(fmt.Sprintf("GPU%d ", g.Index))+s.Value.Render(ansiTrunc(g.Name, iw-5-ansi.StringWidth(info)))+s.Muted.Render(info))
		frac := 0.0
		if g.MemTotal > 0 {
			frac = float64(g.MemUsed) / float64(g.MemTotal)
		}
		mem := fmt.Sprintf(" %s/%s", humanBytes(g.MemUsed), humanBytes(g.MemTotal))
		out = append(out, s.Label.Render("VRAM ")+d.c.Gauge(frac, max(4, iw-5-len(mem)), true)+s.Value.Render(mem))
	}
	if d.stats.GPUErr != nil {
		out = append(out, s.LogError.Render(ansiTrunc("GPU: "+d.stats.GPUErr.Error(), iw)))
	}
	h := d.stats.Host
	if d.stats.HostErr != nil {
		return append(out, s.LogError.Render(ansiTrunc("host: "+d.stats.HostErr.Error(), iw)))
	}
	cpu := fmt.Sprintf(" %3.0f%% %dc", h.CPU, h.Cores)
	out = append(out, s.Label.Render("CPU  ")+d.c.Gauge(h.CPU/100, max(4, iw-5-len(cpu)), true)+s.Value.Render(cpu))
	frac := 0.0
	if h.MemTotal > 0 {
		frac = float64(h.MemUsed) / float64(h.MemTotal)
	}
	mem := fmt.Sprintf(" %s/%s", humanBytes(h.MemUsed), humanBytes(h.MemTotal))
	out = append(out, s.Label.Render("RAM  ")+d.c.Gauge(frac, max(4, iw-5-len(mem)), true)+s.Value.Render(mem))
	return out
}
