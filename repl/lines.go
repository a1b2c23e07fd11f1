package repl

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"
)

// lineReader reads the user's input a line at a time.
type lineReader interface {
	// ReadLine shows prompt (on a terminal) and returns one line without
	// its newline; io.EOF at the end of input, errCancelled after Ctrl-C.
	ReadLine(prompt string) (string, error)
	Close() error
}

// errCancelled reports Ctrl-C at the prompt.
var errCancelled = errors.New("cancelled")

// newLineReader returns a terminal line editor (arrows, history, Ctrl-C,
// Ctrl-D) when in and out are terminals, and a plain line reader
// otherwise (pipes, tests). tty reports which.
func newLineReader(in io.Reader, out io.Writer, h *history) (lineReader, bool) {
	fin, ok1 := in.(*os.File)
	fout, ok2 := out.(*os.File)
	if ok1 && ok2 && term.IsTerminal(int(fin.Fd())) && term.IsTerminal(int(fout.Fd())) {
		r := &ttyReader{fd: int(fin.Fd()), out: fout}
		r.keys = &ctrlCReader{r: fin}
		r.t = term.NewTerminal(struct {
			io.Reader
			io.Writer
		}{r.keys, fout}, "")
		r.t.History = termHistory{h}
		return r, true
	}
	return &plainReader{r: bufio.NewReader(in)}, false
}

// plainReader reads lines from a non-terminal.
type plainReader struct{ r *bufio.Reader }

func (p *plainReader) ReadLine(string) (string, error) {
	line, err := p.r.ReadString('\n')
	if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (p *plainReader) Close() error { return nil }

// ttyReader edits lines with x/term's Terminal, in raw mode only while a
// line is read, so that Ctrl-C raises SIGINT while a cell runs.
type ttyReader struct {
	fd   int
	out  *os.File
	keys *ctrlCReader
	t    *term.Terminal
}

func (r *ttyReader) ReadLine(prompt string) (string, error) {
	old, err := term.MakeRaw(r.fd)
	if err != nil {
		return "", err
	}
	defer term.Restore(r.fd, old)
	// A terminal closed (SIGHUP) or a kill (SIGTERM) at the prompt would
	// leave the terminal raw: restore it first.
	defer restoreOnSignal(func() { term.Restore(r.fd, old) }, reraise)()
	if w, h, err := term.GetSize(int(r.out.Fd())); err == nil {
		r.t.SetSize(w, h)
	}
	r.t.SetPrompt(prompt)
	line, err := r.t.ReadLine()
	if r.keys.interrupted {
		r.keys.interrupted = false
		return "", errCancelled
	}
	return line, err
}

func (r *ttyReader) Close() error { return nil }

// ctrlCReader turns Ctrl-C into "end of line, erase line, enter" for
// x/term (which would report it as end of input) and remembers it.
type ctrlCReader struct {
	r           io.Reader
	interrupted bool
}

func (c *ctrlCReader) Read(p []byte) (int, error) {
	// Leave room for the expansion of one ^C into three bytes.
	n, err := c.r.Read(p[:max(1, len(p)/3)])
	if i := bytes.IndexByte(p[:n], 3); i >= 0 {
		c.interrupted = true
		n = i + copy(p[i:], []byte{5, 21, '\r'})
	}
	return n, err
}

// termHistory lets x/term browse the session history; lines are added by
// the session itself (in both terminal and plain modes).
type termHistory struct{ h *history }

func (t termHistory) Add(string)        {}
func (t termHistory) Len() int          { return t.h.Len() }
func (t termHistory) At(idx int) string { return t.h.At(idx) }

// exitSignals end the process by default; restoreOnSignal handles them
// while the terminal is raw.
var exitSignals = []os.Signal{syscall.SIGTERM, syscall.SIGHUP}

// restoreOnSignal calls restore and then exit when one of exitSignals
// arrives before the returned stop function is called.
func restoreOnSignal(restore func(), exit func(os.Signal)) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, exitSignals...)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case sig := <-ch:
			restore()
			exit(sig)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		<-finished
	}
}

// reraise ends the process by sig's default action (exit status 128+n
// where that cannot be done).
func reraise(sig os.Signal) {
	signal.Reset(sig)
	if p, err := os.FindProcess(os.Getpid()); err == nil && p.Signal(sig) == nil {
		time.Sleep(time.Second)
	}
	code := 1
	if s, ok := sig.(syscall.Signal); ok {
		code = 128 + int(s)
	}
	os.Exit(code)
}
