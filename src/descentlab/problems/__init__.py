"""What is optimised: analytic 2-D surfaces and built-in workloads (data + model)."""
