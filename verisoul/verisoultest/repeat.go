package verisoultest

// Repeat is n times s, for a script that answers the same way n times.
func Repeat(s Step, n int) []Step {
	out := make([]Step, n)
	for i := range out {
		out[i] = s
	}
	return out
}
