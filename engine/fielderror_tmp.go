package engine

import "fmt"

// FieldError is an error about one request field (temporary; replaced by
// the request-field table's).
type FieldError struct {
	Field string
	Value any
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s %v: %s", e.Field, e.Value, e.Msg) }
