import WaveFlow

// OpenBLAS picks its kernel when it is loaded, before this line runs; if it
// would run a slow one, this re-executes the tool with the right one chosen.
BLAS.ensureFastKernel()
configureAllocator()
Waveflow.main()
