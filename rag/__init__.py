"""售后问答: retrieval-augmented Q&A on Chinese online-shopping after-sales rights."""
import os

# libgomp threads that spin-wait after a parallel region starve the next one (torch after faiss,
# or any other busy process on a 2-core box): a query then takes ~1 s instead of ~40 ms.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
