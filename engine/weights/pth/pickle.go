package pth

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The values the machine builds. Python objects map to: None → nil,
// bool, int → int64 (or *big.Int past 64 bits), float → float64, str →
// string, bytes → []byte, list and set → *pyList, tuple → pyTuple, dict and
// OrderedDict → *pyDict, an allowed global → pyGlobal, a storage → *storage,
// a tensor → *tensorRef.
type (
	pyTuple []any
	pyList  struct{ items []any }
	pyDict  struct {
		keys, vals []any
		index      map[any]int
	}
	pyGlobal struct{ module, name string }
)

func newDict() *pyDict { return &pyDict{index: map[any]int{}} }

// set stores d[k] = v; keys must be hashable in Go (None, bool, int,
// float, str), which every key of a state dict is.
func (d *pyDict) set(k, v any) error {
	switch k.(type) {
	case nil, bool, int64, float64, string:
	default:
		return fmt.Errorf("a dict key of type %s", typeName(k))
	}
	if i, ok := d.index[k]; ok {
		d.vals[i] = v
		return nil
	}
	d.index[k] = len(d.keys)
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return nil
}

func (d *pyDict) get(k string) (any, bool) {
	i, ok := d.index[k]
	if !ok {
		return nil, false
	}
	return d.vals[i], true
}

func (g pyGlobal) String() string { return g.module + "." + g.name }

// typeName names a value's Python type in messages.
func typeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case pyTuple:
		return "tuple"
	case *pyList:
		return "list"
	case *pyDict:
		return "dict"
	case pyGlobal:
		return v.String()
	case *storage:
		return "storage"
	case *tensorRef:
		return "tensor"
	}
	return fmt.Sprintf("%T", v)
}

// python2Modules are Python 2 module names that protocol 0-2 pickles
// written by Python 3 carry (pickle's fix_imports: subprocess.Popen is
// written as commands.Popen, eval as __builtin__.eval), with the Python 3
// modules an unpickler imports for them: the ones a refusal names, and
// the two an allowed global may come under.
var python2Modules = map[string]string{
	"__builtin__": "builtins",
	"exceptions":  "builtins",
	"copy_reg":    "copyreg",
	"commands":    "subprocess",
	"cPickle":     "pickle",
	"thread":      "_thread",
	"urllib2":     "urllib.request",
	"httplib":     "http.client",
	"StringIO":    "io",
	"cStringIO":   "io",
	"UserDict":    "collections",
}

// canonicalModule returns the Python 3 name of a module a pickle names.
func canonicalModule(m string) string {
	if p3, ok := python2Modules[m]; ok {
		return p3
	}
	return m
}

// allowedGlobals are the globals a pickle may name: the ones torch's
// weights_only unpickler allows for state dicts of tensors. Each is
// either called (see machine.call) or only used as a value (storage
// types in persistent ids, torch.Tensor / Parameter as the type argument
// of _rebuild_from_type_v2, dtypes).
var allowedGlobals = map[string]bool{
	"collections.OrderedDict":                    true,
	"typing.OrderedDict":                         true,
	"torch._utils._rebuild_tensor":               true,
	"torch._utils._rebuild_tensor_v2":            true,
	"torch._utils._rebuild_parameter":            true,
	"torch._utils._rebuild_parameter_with_state": true,
	"torch._tensor._rebuild_from_type_v2":        true,
	"torch.Tensor":                               true,
	"torch.nn.parameter.Parameter":               true,
	"torch.Size":                                 true,
	"torch.device":                               true,
	"builtins.set":                               true,
	"builtins.frozenset":                         true,
	"builtins.dict":                              true,
	"builtins.list":                              true,
	"builtins.tuple":                             true,
	"_codecs.encode":                             true,
}

func init() {
	for name := range storageTypes {
		allowedGlobals["torch."+name] = true
	}
	for _, dt := range []string{"float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool", "float8_e4m3fn", "float8_e5m2"} {
		allowedGlobals["torch."+dt] = true
	}
}

// UnsafeError reports a pickle that names a global a checkpoint of
// tensors never needs, or uses an opcode that calls one (INST, OBJ, the
// extension registry): loading it would run code chosen by whoever wrote
// the file. Nothing of the file has been used when it is returned.
type UnsafeError struct {
	Path string
	// Global is the global the pickle names ("posix.system"), or empty.
	Global string
	// Opcode names the opcode that calls it when it is not GLOBAL /
	// STACK_GLOBAL ("INST", "OBJ", "EXT1").
	Opcode string
}

// Error is one line: the file, the global and what to do.
func (e *UnsafeError) Error() string {
	what := "the pickle calls " + e.Global
	switch {
	case e.Global == "":
		what = "the pickle uses the " + e.Opcode + " opcode to call code"
	case e.Opcode != "":
		what += " through the " + e.Opcode + " opcode"
	}
	return fmt.Sprintf("%s: refuses to load: %s (a checkpoint that could run code); convert it to .safetensors", e.Path, what)
}

// Is makes errors.Is(err, ErrUnsafe) true.
func (e *UnsafeError) Is(target error) bool { return target == ErrUnsafe }

// machine is the restricted unpickler: a pickle virtual machine that
// knows only the opcodes of data (no INST / OBJ / extension registry /
// out-of-band buffers), resolves only allowedGlobals and calls only the
// handful of constructors in call. Everything it builds is plain data.
type machine struct {
	data  []byte
	pos   int
	stack []any
	marks []int
	memo  map[uint64]any
	// persistent resolves a BINPERSID id (torch's storages).
	persistent func(id pyTuple) (any, error)
	// unsafe is set when the pickle was refused for safety.
	unsafe *UnsafeError
}

// errFormat formats a malformed-pickle error with the opcode's position.
func (m *machine) errf(format string, args ...any) error {
	return fmt.Errorf("pickle byte %d: "+format, append([]any{m.pos}, args...)...)
}

func (m *machine) refuse(global, opcode string) error {
	m.unsafe = &UnsafeError{Global: global, Opcode: opcode}
	return m.unsafe
}

func (m *machine) need(n int) ([]byte, error) {
	if n < 0 || n > len(m.data)-m.pos {
		return nil, m.errf("truncated (want %d more bytes, have %d)", n, len(m.data)-m.pos)
	}
	b := m.data[m.pos : m.pos+n : m.pos+n]
	m.pos += n
	return b, nil
}

func (m *machine) line() (string, error) {
	i := strings.IndexByte(string(m.data[m.pos:min(len(m.data), m.pos+4096)]), '\n')
	if i < 0 {
		return "", m.errf("truncated text argument")
	}
	s := string(m.data[m.pos : m.pos+i])
	m.pos += i + 1
	return s, nil
}

func (m *machine) u8() (int, error) {
	b, err := m.need(1)
	if err != nil {
		return 0, err
	}
	return int(b[0]), nil
}

func (m *machine) u16() (int, error) {
	b, err := m.need(2)
	if err != nil {
		return 0, err
	}
	return int(binary.LittleEndian.Uint16(b)), nil
}

func (m *machine) u32() (uint32, error) {
	b, err := m.need(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (m *machine) u64() (uint64, error) {
	b, err := m.need(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (m *machine) push(v any) { m.stack = append(m.stack, v) }

// memoIndex reads the memo index of a PUT or GET opcode: a byte after
// the one-byte form (short), four after the long form (long), a decimal
// line after the text form.
func (m *machine) memoIndex(op, short, long byte, what string) (uint64, error) {
	switch op {
	case short:
		v, err := m.u8()
		return uint64(v), err
	case long:
		v, err := m.u32()
		return uint64(v), err
	}
	s, err := m.line()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, m.errf("bad %s index %q", what, s)
	}
	return v, nil
}

func (m *machine) pop() (any, error) {
	if len(m.stack) == 0 || (len(m.marks) > 0 && len(m.stack) == m.marks[len(m.marks)-1]) {
		return nil, m.errf("stack underflow")
	}
	v := m.stack[len(m.stack)-1]
	m.stack = m.stack[:len(m.stack)-1]
	return v, nil
}

func (m *machine) top() (any, error) {
	if len(m.stack) == 0 || (len(m.marks) > 0 && len(m.stack) == m.marks[len(m.marks)-1]) {
		return nil, m.errf("stack underflow")
	}
	return m.stack[len(m.stack)-1], nil
}

// popMark returns the items pushed since the last MARK and drops them
// and the mark.
func (m *machine) popMark() ([]any, error) {
	if len(m.marks) == 0 {
		return nil, m.errf("no MARK on the stack")
	}
	k := m.marks[len(m.marks)-1]
	m.marks = m.marks[:len(m.marks)-1]
	items := append([]any(nil), m.stack[k:]...)
	m.stack = m.stack[:k]
	return items, nil
}

// global resolves GLOBAL / STACK_GLOBAL: an allowed name becomes a
// pyGlobal value, any other refuses the file.
func (m *machine) global(module, name string) error {
	g := pyGlobal{canonicalModule(module), name}
	if !allowedGlobals[g.String()] {
		return m.refuse(g.String(), "")
	}
	m.push(g)
	return nil
}

// run executes the pickle from the current position to STOP and returns
// the value it built.
func (m *machine) run() (any, error) {
	if m.memo == nil {
		m.memo = map[uint64]any{}
	}
	for {
		op, err := m.u8()
		if err != nil {
			return nil, m.errf("truncated: no STOP opcode")
		}
		if err := m.step(byte(op)); err != nil {
			if err == errStop {
				v, err := m.pop()
				if err != nil {
					return nil, err
				}
				return v, nil
			}
			return nil, err
		}
	}
}

type stopError struct{}

func (stopError) Error() string { return "STOP" }

var errStop error = stopError{}

// step executes one opcode.
func (m *machine) step(op byte) error {
	switch op {
	case '.': // STOP
		return errStop
	case 0x80: // PROTO
		p, err := m.u8()
		if err != nil {
			return err
		}
		if p > 5 {
			return m.errf("pickle protocol %d (at most 5 is known)", p)
		}
	case 0x95: // FRAME: framing is advisory; the length only bounds the frame
		n, err := m.u64()
		if err != nil {
			return err
		}
		if n > uint64(len(m.data)-m.pos) {
			return m.errf("frame of %d bytes past the end", n)
		}
	case '(': // MARK
		m.marks = append(m.marks, len(m.stack))
	case '0': // POP
		if len(m.marks) > 0 && len(m.stack) == m.marks[len(m.marks)-1] {
			m.marks = m.marks[:len(m.marks)-1] // POP of a mark
			return nil
		}
		_, err := m.pop()
		return err
	case '1': // POP_MARK
		_, err := m.popMark()
		return err
	case '2': // DUP
		v, err := m.top()
		if err != nil {
			return err
		}
		m.push(v)

	case 'N':
		m.push(nil)
	case 0x88:
		m.push(true)
	case 0x89:
		m.push(false)
	case 'J': // BININT
		v, err := m.u32()
		if err != nil {
			return err
		}
		m.push(int64(int32(v)))
	case 'K': // BININT1
		v, err := m.u8()
		if err != nil {
			return err
		}
		m.push(int64(v))
	case 'M': // BININT2
		v, err := m.u16()
		if err != nil {
			return err
		}
		m.push(int64(v))
	case 0x8a, 0x8b: // LONG1, LONG4
		var n int
		if op == 0x8a {
			v, err := m.u8()
			if err != nil {
				return err
			}
			n = v
		} else {
			v, err := m.u32()
			if err != nil {
				return err
			}
			if int64(v) > int64(len(m.data)-m.pos) {
				return m.errf("LONG4 of %d bytes past the end", v)
			}
			n = int(v)
		}
		b, err := m.need(n)
		if err != nil {
			return err
		}
		m.push(decodeLong(b))
	case 'G': // BINFLOAT (big-endian)
		b, err := m.need(8)
		if err != nil {
			return err
		}
		m.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case 'I', 'L': // INT, LONG (text)
		s, err := m.line()
		if err != nil {
			return err
		}
		s = strings.TrimSuffix(s, "L")
		switch {
		case op == 'I' && s == "01":
			m.push(true)
		case op == 'I' && s == "00":
			m.push(false)
		default:
			v, ok := new(big.Int).SetString(s, 10)
			if !ok {
				return m.errf("bad integer %q", s)
			}
			m.push(normalInt(v))
		}
	case 'F': // FLOAT (text)
		s, err := m.line()
		if err != nil {
			return err
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return m.errf("bad float %q", s)
		}
		m.push(v)

	case 'X', 0x8c, 0x8d: // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
		b, err := m.sized(op)
		if err != nil {
			return err
		}
		if !utf8.Valid(b) {
			return m.errf("a str that is not UTF-8")
		}
		m.push(string(b))
	case 'B', 'C', 0x8e, 0x96: // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
		b, err := m.sized(op)
		if err != nil {
			return err
		}
		m.push(b)
	case 'T', 'U': // BINSTRING, SHORT_BINSTRING (Python 2 str: read as latin-1)
		b, err := m.sized(op)
		if err != nil {
			return err
		}
		m.push(latin1(b))
	case 'S': // STRING (text, quoted)
		s, err := m.line()
		if err != nil {
			return err
		}
		if len(s) < 2 || (s[0] != '\'' && s[0] != '"') || s[len(s)-1] != s[0] || strings.ContainsRune(s[1:len(s)-1], '\\') {
			return m.errf("unsupported STRING argument %q", s)
		}
		m.push(s[1 : len(s)-1])
	case 'V': // UNICODE (raw-unicode-escape text)
		s, err := m.line()
		if err != nil {
			return err
		}
		u, err := rawUnicodeEscape(s)
		if err != nil {
			return m.errf("%v", err)
		}
		m.push(u)

	case ')':
		m.push(pyTuple{})
	case 't': // TUPLE
		items, err := m.popMark()
		if err != nil {
			return err
		}
		m.push(pyTuple(items))
	case 0x85, 0x86, 0x87: // TUPLE1..3
		n := int(op-0x85) + 1
		t := make(pyTuple, n)
		for i := n - 1; i >= 0; i-- {
			v, err := m.pop()
			if err != nil {
				return err
			}
			t[i] = v
		}
		m.push(t)
	case ']':
		m.push(&pyList{})
	case 'l': // LIST
		items, err := m.popMark()
		if err != nil {
			return err
		}
		m.push(&pyList{items: items})
	case 'a': // APPEND
		v, err := m.pop()
		if err != nil {
			return err
		}
		l, err := m.topList()
		if err != nil {
			return err
		}
		l.items = append(l.items, v)
	case 'e', 0x90: // APPENDS, ADDITEMS
		items, err := m.popMark()
		if err != nil {
			return err
		}
		l, err := m.topList()
		if err != nil {
			return err
		}
		l.items = append(l.items, items...)
	case 0x8f: // EMPTY_SET
		m.push(&pyList{})
	case 0x91: // FROZENSET
		items, err := m.popMark()
		if err != nil {
			return err
		}
		m.push(&pyList{items: items})
	case '}':
		m.push(newDict())
	case 'd': // DICT
		items, err := m.popMark()
		if err != nil {
			return err
		}
		d := newDict()
		if err := m.setItems(d, items); err != nil {
			return err
		}
		m.push(d)
	case 's': // SETITEM
		v, err := m.pop()
		if err != nil {
			return err
		}
		k, err := m.pop()
		if err != nil {
			return err
		}
		d, err := m.topDict()
		if err != nil {
			return err
		}
		if err := d.set(k, v); err != nil {
			return m.errf("%v", err)
		}
	case 'u': // SETITEMS
		items, err := m.popMark()
		if err != nil {
			return err
		}
		d, err := m.topDict()
		if err != nil {
			return err
		}
		return m.setItems(d, items)

	case 'q', 'r', 'p': // BINPUT, LONG_BINPUT, PUT
		idx, err := m.memoIndex(op, 'q', 'r', "PUT")
		if err != nil {
			return err
		}
		v, err := m.top()
		if err != nil {
			return err
		}
		m.memo[idx] = v
	case 0x94: // MEMOIZE
		v, err := m.top()
		if err != nil {
			return err
		}
		m.memo[uint64(len(m.memo))] = v
	case 'h', 'j', 'g': // BINGET, LONG_BINGET, GET
		idx, err := m.memoIndex(op, 'h', 'j', "GET")
		if err != nil {
			return err
		}
		v, ok := m.memo[idx]
		if !ok {
			return m.errf("memo %d is not set", idx)
		}
		m.push(v)

	case 'c': // GLOBAL
		module, err := m.line()
		if err != nil {
			return err
		}
		name, err := m.line()
		if err != nil {
			return err
		}
		return m.global(module, name)
	case 0x93: // STACK_GLOBAL
		name, err := m.pop()
		if err != nil {
			return err
		}
		module, err := m.pop()
		if err != nil {
			return err
		}
		ms, ok1 := module.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return m.errf("STACK_GLOBAL of %s and %s, want two str", typeName(module), typeName(name))
		}
		return m.global(ms, ns)
	case 'R': // REDUCE
		args, err := m.pop()
		if err != nil {
			return err
		}
		fn, err := m.pop()
		if err != nil {
			return err
		}
		v, err := m.call(fn, args)
		if err != nil {
			return err
		}
		m.push(v)
	case 0x81, 0x92: // NEWOBJ, NEWOBJ_EX: cls.__new__(cls, *args)
		if op == 0x92 {
			kw, err := m.pop()
			if err != nil {
				return err
			}
			if d, ok := kw.(*pyDict); !ok || len(d.keys) > 0 {
				return m.errf("NEWOBJ_EX with keyword arguments")
			}
		}
		args, err := m.pop()
		if err != nil {
			return err
		}
		cls, err := m.pop()
		if err != nil {
			return err
		}
		v, err := m.call(cls, args)
		if err != nil {
			return err
		}
		m.push(v)
	case 'b': // BUILD
		state, err := m.pop()
		if err != nil {
			return err
		}
		obj, err := m.top()
		if err != nil {
			return err
		}
		return m.build(obj, state)
	case 'Q': // BINPERSID
		id, err := m.pop()
		if err != nil {
			return err
		}
		t, ok := id.(pyTuple)
		if !ok || m.persistent == nil {
			return m.errf("a persistent id of type %s", typeName(id))
		}
		v, err := m.persistent(t)
		if err != nil {
			return err
		}
		m.push(v)

	case 'i': // INST module name: calls a class with the marked arguments
		module, err := m.line()
		if err != nil {
			return err
		}
		name, err := m.line()
		if err != nil {
			return err
		}
		return m.refuse(canonicalModule(module)+"."+name, "INST")
	case 'o': // OBJ: calls the first marked item with the rest
		items, err := m.popMark()
		if err != nil {
			return err
		}
		if len(items) > 0 {
			if g, ok := items[0].(pyGlobal); ok {
				return m.refuse(g.String(), "OBJ")
			}
		}
		return m.refuse("", "OBJ")
	case 0x82, 0x83, 0x84: // EXT1, EXT2, EXT4: a global from copyreg's extension registry
		return m.refuse("", fmt.Sprintf("EXT%d", map[byte]int{0x82: 1, 0x83: 2, 0x84: 4}[op]))
	case 'P':
		return m.errf("PERSID (a text persistent id), which torch never writes")
	case 0x97, 0x98:
		return m.errf("out-of-band buffers (protocol 5 NEXT_BUFFER / READONLY_BUFFER)")
	default:
		return m.errf("unknown opcode 0x%02x", op)
	}
	return nil
}

// sized reads the length-prefixed payload of a string or bytes opcode.
func (m *machine) sized(op byte) ([]byte, error) {
	var n uint64
	switch op {
	case 0x8c, 'C', 'U': // one-byte length
		v, err := m.u8()
		if err != nil {
			return nil, err
		}
		n = uint64(v)
	case 'X', 'B', 'T': // four-byte length
		v, err := m.u32()
		if err != nil {
			return nil, err
		}
		n = uint64(v)
	default: // eight-byte length
		v, err := m.u64()
		if err != nil {
			return nil, err
		}
		n = v
	}
	if n > uint64(len(m.data)-m.pos) {
		return nil, m.errf("a string of %d bytes past the end", n)
	}
	return m.need(int(n))
}

func (m *machine) topList() (*pyList, error) {
	v, err := m.top()
	if err != nil {
		return nil, err
	}
	l, ok := v.(*pyList)
	if !ok {
		return nil, m.errf("APPEND to a %s", typeName(v))
	}
	return l, nil
}

func (m *machine) topDict() (*pyDict, error) {
	v, err := m.top()
	if err != nil {
		return nil, err
	}
	d, ok := v.(*pyDict)
	if !ok {
		return nil, m.errf("SETITEM on a %s", typeName(v))
	}
	return d, nil
}

func (m *machine) setItems(d *pyDict, items []any) error {
	if len(items)%2 != 0 {
		return m.errf("SETITEMS with an odd number of items")
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.set(items[i], items[i+1]); err != nil {
			return m.errf("%v", err)
		}
	}
	return nil
}

// call is REDUCE / NEWOBJ: fn must be one of the allowed constructors.
func (m *machine) call(fn, args any) (any, error) {
	g, ok := fn.(pyGlobal)
	if !ok {
		return nil, m.errf("a call of a %s", typeName(fn))
	}
	a, ok := args.(pyTuple)
	if !ok {
		return nil, m.errf("%s called with a %s, not a tuple", g, typeName(args))
	}
	switch g.String() {
	case "collections.OrderedDict", "typing.OrderedDict", "builtins.dict":
		d := newDict()
		if len(a) == 1 {
			src, err := pairs(a[0])
			if err != nil {
				return nil, m.errf("%s(%s): %v", g, typeName(a[0]), err)
			}
			if err := m.setItems(d, src); err != nil {
				return nil, err
			}
		} else if len(a) > 1 {
			return nil, m.errf("%s with %d arguments", g, len(a))
		}
		return d, nil
	case "builtins.set", "builtins.frozenset", "builtins.list", "builtins.tuple":
		var items []any
		if len(a) == 1 {
			switch v := a[0].(type) {
			case *pyList:
				items = append(items, v.items...)
			case pyTuple:
				items = append(items, v...)
			default:
				return nil, m.errf("%s(%s)", g, typeName(a[0]))
			}
		} else if len(a) > 1 {
			return nil, m.errf("%s with %d arguments", g, len(a))
		}
		if g.name == "tuple" {
			return pyTuple(items), nil
		}
		return &pyList{items: items}, nil
	case "torch.Size":
		if len(a) == 1 {
			if t, ok := a[0].(pyTuple); ok {
				return t, nil
			}
		}
		return nil, m.errf("torch.Size of %d arguments", len(a))
	case "torch.device":
		if len(a) >= 1 {
			if s, ok := a[0].(string); ok {
				return s, nil
			}
		}
		return nil, m.errf("torch.device of %d arguments", len(a))
	case "_codecs.encode": // protocol 2's bytes: encode(str, "latin1")
		if len(a) == 2 {
			s, ok1 := a[0].(string)
			enc, ok2 := a[1].(string)
			if ok1 && ok2 && (enc == "latin1" || enc == "latin-1") {
				b := make([]byte, 0, len(s))
				for _, r := range s {
					if r > 0xff {
						return nil, m.errf("_codecs.encode: %q is not latin-1", s)
					}
					b = append(b, byte(r))
				}
				return b, nil
			}
		}
		return nil, m.errf("_codecs.encode of %d arguments", len(a))
	case "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2":
		return rebuildTensor(a, g.name == "_rebuild_tensor_v2")
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		if len(a) < 3 {
			return nil, m.errf("%s of %d arguments", g, len(a))
		}
		t, ok := a[0].(*tensorRef)
		if !ok {
			return nil, m.errf("%s of a %s", g, typeName(a[0]))
		}
		return t, nil
	case "torch._tensor._rebuild_from_type_v2": // (func, type, args, state)
		if len(a) != 4 {
			return nil, m.errf("%s of %d arguments", g, len(a))
		}
		typ, ok := a[1].(pyGlobal)
		if !ok || (typ.String() != "torch.Tensor" && typ.String() != "torch.nn.parameter.Parameter") {
			return nil, m.errf("%s of type %s", g, typeName(a[1]))
		}
		if f, ok := a[0].(pyGlobal); !ok || !strings.HasPrefix(f.String(), "torch._utils._rebuild_") {
			return nil, m.errf("%s with function %s", g, typeName(a[0]))
		}
		return m.call(a[0], a[2])
	}
	return nil, m.errf("%s is not callable in a checkpoint of tensors", g)
}

// pairs reads the (key, value) pairs of OrderedDict(items).
func pairs(v any) ([]any, error) {
	var items []any
	switch v := v.(type) {
	case *pyList:
		items = v.items
	case pyTuple:
		items = v
	case *pyDict:
		out := make([]any, 0, 2*len(v.keys))
		for i := range v.keys {
			out = append(out, v.keys[i], v.vals[i])
		}
		return out, nil
	default:
		return nil, fmt.Errorf("not a list of pairs")
	}
	out := make([]any, 0, 2*len(items))
	for _, it := range items {
		p, ok := it.(pyTuple)
		if !ok || len(p) != 2 {
			return nil, fmt.Errorf("an item that is not a pair")
		}
		out = append(out, p[0], p[1])
	}
	return out, nil
}

// build is BUILD (obj.__setstate__(state)): a dict's state is its
// attributes (a state dict's _metadata), a tensor's its Python
// attributes; both are dropped. Any other object is refused.
func (m *machine) build(obj, state any) error {
	switch obj.(type) {
	case *pyDict, *tensorRef:
		return nil
	}
	return m.errf("BUILD on a %s", typeName(obj))
}

// decodeLong decodes pickle's little-endian two's-complement integers.
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	v := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return normalInt(v)
}

func normalInt(v *big.Int) any {
	if v.IsInt64() {
		return v.Int64()
	}
	return v
}

func latin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

// rawUnicodeEscape decodes protocol 0's UNICODE argument: \uXXXX and
// \UXXXXXXXX escapes, every other byte a latin-1 character.
func rawUnicodeEscape(s string) (string, error) {
	var out []rune
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') {
			n := 4
			if s[i+1] == 'U' {
				n = 8
			}
			if i+2+n > len(s) {
				return "", fmt.Errorf("truncated \\u escape in %q", s)
			}
			v, err := strconv.ParseUint(s[i+2:i+2+n], 16, 32)
			if err != nil || v > utf8.MaxRune {
				return "", fmt.Errorf("bad \\u escape in %q", s)
			}
			out = append(out, rune(v))
			i += 1 + n
			continue
		}
		out = append(out, rune(s[i]))
	}
	return string(out), nil
}
