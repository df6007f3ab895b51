"""video_pose: 2D-to-3D human pose lifters and HoT's token pruning and recovery.

- ``video_pose.mixste``: MixSTE (``mixste``) and the spatial/temporal blocks.
- ``video_pose.hot``: token pruning cluster (TPC), token recovering attention (TRA), ``hot-mixste``, ``tpc-mixste``.
- ``video_pose.motionbert``: DSTformer (``motionbert``) and ``hot-motionbert``.
- ``video_pose.skeleton``: H3.6M-17 order, screen normalisation, COCO-17 -> H3.6M-17, flips, sliding windows.
- ``video_pose.synth``: synthetic motion for the tiny models; ``video_pose.train_tiny`` trains them.
- ``video_pose.convert``: upstream checkpoints -> zoo folders; ``video_pose.flops``: params and FLOPs.

    import zoo
    model = zoo.load("hot-mixste-tiny")
    tokens = model.encode(kp2d)       # kept pose tokens + meta["kept_frame_indices"]
    pose3d = model.decode(tokens)     # full length (B, F, 17, 3)
    pose3d = model.lift(kp2d, flip=True)   # any length: sliding windows
"""
