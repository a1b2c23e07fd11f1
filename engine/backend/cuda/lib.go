package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ebitengine/purego"
)

// library is a shared object opened with dlopen.
type library struct {
	handle uintptr
	// path is where it was found ("libcuda.so.1" when the system loader
	// found it by name).
	path string
}

// sym resolves a symbol of the library.
func (l *library) sym(name string) (uintptr, error) {
	p, err := purego.Dlsym(l.handle, name)
	if err != nil {
		return 0, fmt.Errorf("%s: symbol %s: %w", filepath.Base(l.path), name, err)
	}
	return p, nil
}

// searchDirs lists the folders searched, after the system loader, for the
// CUDA libraries: $CUDA_PATH and $CUDA_HOME, each $LD_LIBRARY_PATH entry,
// /usr/local/cuda, and the lib folders of pip-installed NVIDIA wheels
// (site-packages/nvidia/{cublas,cu13,cu12,cudnn}/lib) in the usual Python
// prefixes. getenv and glob are parameters so that tests can drive it.
func searchDirs(getenv func(string) string, glob func(string) ([]string, error)) []string {
	var dirs []string
	add := func(d ...string) {
		for _, x := range d {
			if x != "" {
				dirs = append(dirs, x)
			}
		}
	}
	for _, env := range []string{"CUDA_PATH", "CUDA_HOME"} {
		if root := getenv(env); root != "" {
			add(filepath.Join(root, "lib64"), filepath.Join(root, "lib"), filepath.Join(root, "targets", "x86_64-linux", "lib"))
		}
	}
	add(strings.Split(getenv("LD_LIBRARY_PATH"), ":")...)
	add("/usr/local/cuda/lib64", "/usr/lib/wsl/lib")

	var prefixes []string
	for _, env := range []string{"VIRTUAL_ENV", "CONDA_PREFIX"} {
		if p := getenv(env); p != "" {
			prefixes = append(prefixes, filepath.Join(p, "lib", "python3*", "site-packages"))
		}
	}
	if home := getenv("HOME"); home != "" {
		prefixes = append(prefixes, filepath.Join(home, ".local", "lib", "python3*", "site-packages"))
	}
	prefixes = append(prefixes,
		"/usr/local/lib/python3*/dist-packages",
		"/usr/local/lib/python3*/site-packages",
		"/usr/lib/python3/dist-packages",
		"/usr/lib/python3*/site-packages",
		"/opt/*/lib/python3*/site-packages",
		"/opt/*/.venv/lib/python3*/site-packages",
	)
	for _, pre := range prefixes {
		for _, sub := range []string{"nvidia/cu13/lib", "nvidia/cublas/lib", "nvidia/cu12/lib", "nvidia/cudnn/lib"} {
			m, err := glob(filepath.Join(pre, sub))
			if err != nil {
				continue
			}
			add(m...)
		}
	}
	// Drop duplicates, keeping the first occurrence.
	seen := map[string]bool{}
	out := dirs[:0]
	for _, d := range dirs {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// openLibrary opens the first of names that the system loader or a search
// folder yields. The error lists everything tried.
func openLibrary(names []string, dirs []string) (*library, error) {
	var tried []string
	for _, n := range names {
		if h, err := purego.Dlopen(n, purego.RTLD_NOW|purego.RTLD_GLOBAL); err == nil {
			return &library{handle: h, path: n}, nil
		}
		tried = append(tried, n)
		for _, d := range dirs {
			p := filepath.Join(d, n)
			if _, err := os.Stat(p); err != nil {
				continue
			}
			h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
			if err == nil {
				return &library{handle: h, path: p}, nil
			}
			tried = append(tried, fmt.Sprintf("%s (%v)", p, err))
		}
	}
	return nil, fmt.Errorf("%w: tried %s", errLibraryNotFound, strings.Join(tried, ", "))
}

var errLibraryNotFound = errors.New("library not found")

// defaultSearchDirs is searchDirs over the process environment.
func defaultSearchDirs() []string { return searchDirs(os.Getenv, filepath.Glob) }
