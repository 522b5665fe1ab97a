package govern

// Decodes is how many times call arguments were parsed so far.
func Decodes() int64 { return decodes.Load() }

// Assign exposes assign for the equivalence test.
var Assign = assign
