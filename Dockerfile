# The image of every node of the KubeRay cluster in rayjob.yaml but the LLM workers:
# Ray's own image at the version constraints.txt pins, torch first, then this package
# under the constraints, as the README installs it.
#   docker build -t REGISTRY/falconer-ray:latest . && docker push REGISTRY/falconer-ray:latest
FROM rayproject/ray:2.60.0-py311
WORKDIR /home/ray/falconer-ray
COPY --chown=ray:users . .
RUN pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir -c constraints.txt -e .
