import sys

from vllm_standin.main import main

sys.exit(main())
