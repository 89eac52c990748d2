"""Pre-processing (paper §3.2, Fig. 2 stage 1): video frames -> stabilised FFHQ-aligned faces, roll, masks, blinks.

  video.py      probe / read_frames / VideoWriter (PyAV: H.264 via libx264, lossless FFV1 for tests)
  landmarks.py  FaceTracker: dlib HOG detector + 68-point predictor shipped by face-recognition-models
  crop.py       ffhq_transform (landmarks -> input-to-aligned similarity), roll_degrees, warp_crop, unwarp_crop
  align.py      align_video -> AlignedFrame (image, roll_deg, crop_transform, landmarks, key frames, blink)
  stabilise.py  register_affine: robust coarse-to-fine affine optical flow to a key frame
  pupils.py     locate_pupils: iris centres from the pixels of the eye openings
  masks.py      region_masks / canonical_masks: mouth+jaw, eyes+brows, pupils, 81-point face, rigid face
  blink.py      eye aspect ratio and the blink threshold

Typical use:
    from codec.preprocess.video import read_frames
    from codec.preprocess.align import align_video
    for aligned in align_video(read_frames("in.mp4"), output_size=1024): ...
"""
