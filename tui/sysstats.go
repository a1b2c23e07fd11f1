package tui

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// HostStat is the host's CPU and memory use.
type HostStat struct {
	// CPU is the utilisation of all cores in percent since the previous
	// sample (0 on the first), and Cores their count.
	CPU   float64
	Cores int
	// MemUsed and MemTotal are bytes (used = total − available).
	MemUsed, MemTotal uint64
}

// hostSampler reads /proc/stat and /proc/meminfo, keeping the previous CPU
// counters to turn them into a utilisation.
type hostSampler struct {
	mu              sync.Mutex
	root            string // "/proc", replaced in tests
	prevIdle, prevT uint64
}

func newHostSampler() *hostSampler { return &hostSampler{root: "/proc"} }

// Sample reads the current host statistics.
func (h *hostSampler) Sample() (HostStat, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var st HostStat
	idle, total, cores, err := readCPU(h.root + "/stat")
	if err != nil {
		return st, err
	}
	st.Cores = cores
	if h.prevT != 0 && total > h.prevT {
		dt, di := total-h.prevT, idle-h.prevIdle
		st.CPU = 100 * float64(dt-min(di, dt)) / float64(dt)
	}
	h.prevIdle, h.prevT = idle, total
	st.MemTotal, st.MemUsed, err = readMem(h.root + "/meminfo")
	return st, err
}

// readCPU returns the idle (idle+iowait) and total jiffies of the "cpu"
// line of /proc/stat and the number of cpuN lines.
func readCPU(path string) (idle, total uint64, cores int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("cpu stats: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := false
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "cpu") {
			continue
		}
		if fields[0] != "cpu" {
			cores++
			continue
		}
		found = true
		for i, v := range fields[1:] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, 0, 0, fmt.Errorf("cpu stats: field %d: %w", i+1, err)
			}
			if i >= 8 { // guest time is already counted in user
				break
			}
			total += n
			if i == 3 || i == 4 {
				idle += n
			}
		}
	}
	if !found {
		return 0, 0, 0, fmt.Errorf("cpu stats: no cpu line in %s", path)
	}
	return idle, total, cores, sc.Err()
}

// readMem returns MemTotal and MemTotal−MemAvailable from /proc/meminfo.
func readMem(path string) (total, used uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("memory stats: %w", err)
	}
	defer f.Close()
	var avail uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "MemTotal:":
			total = v * 1024
		case "MemAvailable:":
			avail = v * 1024
		}
	}
	if total == 0 {
		return 0, 0, fmt.Errorf("memory stats: no MemTotal in %s", path)
	}
	return total, total - min(avail, total), nil
}
