"""DocQA data: loaders, prompt building, synthetic long-document QA (issue: DocQA data)."""
