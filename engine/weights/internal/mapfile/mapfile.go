// Package mapfile gives the checkpoint readers (safetensors, pth, gguf) a
// whole file's bytes: a read-only memory mapping, or a copy where the file
// system cannot be mapped.
package mapfile

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Error reports a path that is not a mappable file (a folder, a file too
// large for the address space); each reader words it in its own error
// type. Msg does not repeat the path.
type Error struct {
	Path string
	Msg  string
}

// Error implements error.
func (e *Error) Error() string { return e.Path + ": " + e.Msg }

// Data is a file's bytes. Bytes aliases a read-only mapping when the file
// could be mapped: never write to it, and do not use it after Close.
type Data struct {
	Bytes  []byte
	mapped bool
}

// Open reads path whole. A folder is an *Error saying it is not a kind
// file ("is a directory, not a GGUF file"); an OS failure comes back as
// "<path>: <reason>" (PathErr). An empty file has no bytes and no mapping.
func Open(path, kind string) (*Data, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, PathErr(path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, PathErr(path, err)
	}
	if st.IsDir() {
		return nil, &Error{Path: path, Msg: "is a directory, not a " + kind}
	}
	size := st.Size()
	if int64(int(size)) != size {
		return nil, &Error{Path: path, Msg: fmt.Sprintf("file of %d bytes is too large to map", size)}
	}
	if size == 0 {
		return &Data{}, nil
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err == nil {
		return &Data{Bytes: data, mapped: true}, nil
	}
	data = make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, PathErr(path, fmt.Errorf("read: %w", err))
	}
	return &Data{Bytes: data}, nil
}

// Close releases the mapping (a no-op for a copy); Bytes becomes invalid.
func (d *Data) Close() error {
	if !d.mapped {
		d.Bytes = nil
		return nil
	}
	d.mapped = false
	err := syscall.Munmap(d.Bytes)
	d.Bytes = nil
	return err
}

// PathErr turns an OS error into "<path>: <reason>" without repeating the
// path that *os.PathError already carries.
func PathErr(path string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", path, pe.Err)
	}
	return fmt.Errorf("%s: %w", path, err)
}
