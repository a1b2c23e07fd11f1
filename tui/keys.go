package tui

import (
	"charm.land/bubbles/v2/key"
)

// KeyMap is every key binding of the TUI.
type KeyMap struct {
	Enqueue  key.Binding
	Cancel   key.Binding
	Next     key.Binding
	Prev     key.Binding
	Up       key.Binding
	Down     key.Binding
	MoveUp   key.Binding
	MoveDown key.Binding
	Remove   key.Binding
	Rerun    key.Binding
	Load     key.Binding
	Left     key.Binding
	Right    key.Binding
	Models   key.Binding
	Help     key.Binding
	Quit     key.Binding
	QuitList key.Binding
	Back     key.Binding
	Yes      key.Binding
	No       key.Binding
	Prompt   key.Binding
	Queue    key.Binding
	History  key.Binding
	Script   key.Binding
}

// DefaultKeyMap returns the default bindings. Global actions use ctrl or
// alt chords so that they work while typing a prompt.
func DefaultKeyMap() KeyMap {
	return KeyMap{
		Enqueue:  key.NewBinding(key.WithKeys("ctrl+g", "alt+enter"), key.WithHelp("ctrl+g", "enqueue")),
		Cancel:   key.NewBinding(key.WithKeys("ctrl+x"), key.WithHelp("ctrl+x", "cancel job")),
		Next:     key.NewBinding(key.WithKeys("tab"), key.WithHelp("tab", "next field")),
		Prev:     key.NewBinding(key.WithKeys("shift+tab"), key.WithHelp("shift+tab", "previous")),
		Up:       key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "up")),
		Down:     key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "down")),
		MoveUp:   key.NewBinding(key.WithKeys("shift+up", "K"), key.WithHelp("K", "move job up")),
		MoveDown: key.NewBinding(key.WithKeys("shift+down", "J"), key.WithHelp("J", "move job down")),
		Remove:   key.NewBinding(key.WithKeys("x", "delete"), key.WithHelp("x", "remove/cancel job")),
		Rerun:    key.NewBinding(key.WithKeys("r", "ctrl+r"), key.WithHelp("r", "re-run, new seed")),
		Load:     key.NewBinding(key.WithKeys("enter", "l"), key.WithHelp("enter", "load parameters")),
		Left:     key.NewBinding(key.WithKeys("left"), key.WithHelp("←/→", "change choice")),
		Right:    key.NewBinding(key.WithKeys("right")),
		Models:   key.NewBinding(key.WithKeys("ctrl+o"), key.WithHelp("ctrl+o", "model")),
		Help:     key.NewBinding(key.WithKeys("?", "f1"), key.WithHelp("?/f1", "help")),
		Quit:     key.NewBinding(key.WithKeys("ctrl+c"), key.WithHelp("ctrl+c", "quit")),
		QuitList: key.NewBinding(key.WithKeys("q"), key.WithHelp("q", "quit (lists)")),
		Back:     key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "close / cancel job (queue)")),
		Yes:      key.NewBinding(key.WithKeys("y", "Y"), key.WithHelp("y", "yes")),
		No:       key.NewBinding(key.WithKeys("n", "N", "esc"), key.WithHelp("n", "no")),
		Prompt:   key.NewBinding(key.WithKeys("alt+1"), key.WithHelp("alt+1", "prompt text")),
		Queue:    key.NewBinding(key.WithKeys("alt+2"), key.WithHelp("alt+2", "queue")),
		History:  key.NewBinding(key.WithKeys("alt+3"), key.WithHelp("alt+3", "history")),
		Script:   key.NewBinding(key.WithKeys(":", "alt+:", "alt+;"), key.WithHelp(":/alt+;", "script line")),
	}
}

// ShortHelp is the one-line hint at the bottom of the screen.
func (k KeyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Enqueue, k.Next, k.Cancel, k.Models, k.Help, k.Quit}
}

// FullHelp is the help overlay, in columns.
func (k KeyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.Enqueue, k.Cancel, k.Models, k.Next, k.Prev, k.Left, k.Prompt, k.Queue, k.History, k.Script},
		{k.Up, k.Down, k.MoveUp, k.MoveDown, k.Remove, k.Rerun, k.Load, k.Back, k.Help, k.Quit, k.QuitList},
	}
}
