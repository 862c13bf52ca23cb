"""Load and smoke tests of the deployed model service (Locust, headless in the Jenkins Load test stage)."""
