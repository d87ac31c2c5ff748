"""The query endpoint (platform side): Ray Serve speaking the Open Inference Protocol (KServe v2)
on ciphertext, with clone defence, monitoring and ownership checks. Nothing here sees a key."""
