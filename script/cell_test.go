package script

import (
	"reflect"
	"strings"
	"testing"
)

func TestIncomplete(t *testing.T) {
	tests := []struct {
		src  string
		want bool
	}{
		{"", false},
		{"x := 1", false},
		{"func f() {", true},
		{"func f() {\n\treturn\n}", false},
		{"xs := []int{", true},
		{"xs := []int{\n1,\n2,\n}", false},
		{"fmt.Println(", true},
		{"fmt.Println(\n\"a\")", false},
		{"s := `raw", true},
		{"s := `raw\nstring`", false},
		{"/* comment", true},
		{"x := 1 +", true},
		{"x := a &&", true},
		{"x++", false},
		{"if x {\n} else {", true},
		{"m[k]", false},
		{"s := \"}\"", false},
	}
	for _, tc := range tests {
		t.Run(tc.src, func(t *testing.T) {
			if got := Incomplete(tc.src); got != tc.want {
				t.Errorf("Incomplete(%q) = %v, want %v", tc.src, got, tc.want)
			}
		})
	}
}

func TestSplitCell(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []segment
	}{
		{"one", "x := 1", []segment{{src: "x := 1", line: 1}}},
		{"semicolons", "a := 1; b := 2; a + b", []segment{{src: "a := 1", line: 1}, {src: "b := 2", line: 1}, {src: "a + b", line: 1, expr: true}}},
		{"for header", "for i := 0; i < 3; i++ {\n\tf(i)\n}\nfmt.Println(i)", []segment{
			{src: "for i := 0; i < 3; i++ {\n\tf(i)\n}", line: 1},
			{src: "fmt.Println(i)", line: 4, expr: true, print: true}}},
		{"if header", "if v, ok := m[k]; ok { x = v }", []segment{{src: "if v, ok := m[k]; ok { x = v }", line: 1}}},
		{"var then stmt", "var fs []int\nfs = append(fs, 1)", []segment{{src: "var fs []int", line: 1}, {src: "fs = append(fs, 1)", line: 2}}},
		{"func decl", "func f() int {\n\treturn 1\n}\nf()", []segment{{src: "func f() int {\n\treturn 1\n}", line: 1}, {src: "f()", line: 4, expr: true}}},
		{"import group", "import (\n\t\"fmt\"\n\t\"os\"\n)", []segment{{src: "import (\n\t\"fmt\"\n\t\"os\"\n)", line: 1}}},
		{"comments", "// note\nx := 1 // trailing\n\nx // value", []segment{{src: "x := 1 // trailing", line: 2}, {src: "x // value", line: 4, expr: true}}},
		{"else", "if a {\n\tb()\n} else {\n\tc()\n}", []segment{{src: "if a {\n\tb()\n} else {\n\tc()\n}", line: 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := splitCell(tc.src)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("splitCell(%q) =\n%+v\nwant\n%+v", tc.src, got, tc.want)
			}
		})
	}
	if _, err := splitCell("s := \"unterminated"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("unterminated string: error %v", err)
	}
}

func TestLoopVarWarnings(t *testing.T) {
	tests := []struct {
		src  string
		want int
	}{
		{"for i := 0; i < 3; i++ {\n\tgo func() { use(i) }()\n}", 1},
		{"for _, v := range xs {\n\tfs = append(fs, func() { use(v) })\n}", 1},
		{"for _, v := range xs {\n\tv := v\n\tfs = append(fs, func() { use(v) })\n}", 0},
		{"for i := 0; i < 3; i++ {\n\tuse(i)\n}", 0},
		{"for _, v := range xs {\n\tgo work(v)\n}", 0}, // the rewrite copies v
	}
	for _, tc := range tests {
		if got := loopVarWarnings(tc.src); len(got) != tc.want {
			t.Errorf("loopVarWarnings(%q) = %q, want %d warnings", tc.src, got, tc.want)
		}
	}
}

func TestIsYaegiPanicLine(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{"1:28: panic: main(...)\n", true},
		{"_.go:12:3: panic\n", true},
		{"script.go:4:2: panic: x\n", true},
		{"panic: boom\n", false},
		{"step 1/2 panic\n", false},
		{"a:b: panic\n", false},
	}
	for _, tc := range tests {
		if got := isYaegiPanicLine(tc.s); got != tc.want {
			t.Errorf("isYaegiPanicLine(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}
