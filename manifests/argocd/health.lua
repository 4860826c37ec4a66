-- Argo CD health check for embrel.dev/EmbeddingRelease.
-- Installed as resource.customizations.health.embrel.dev_EmbeddingRelease in argocd-cm
-- (argocd-cm-patch.yaml beside this file is generated from it by `make manifests`).
--   Ready=True (for the current generation)            -> Healthy
--   phase Failed or Degraded, or Stalled=True          -> Degraded
--   phase AwaitingPromotion (waits for a person)       -> Suspended
--   phase Suspended (spec.suspend: true)               -> Suspended
--   anything else: no status yet, generation not yet
--   observed, building, indexing, validating, promoting -> Progressing
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(status, fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe the release"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase or ""
local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(status, "Live")
  return hs
end

if phase == "Failed" or phase == "Degraded" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  hs.message = describe(status, phase)
  return hs
end

if phase == "AwaitingPromotion" then
  hs.status = "Suspended"
  hs.message = describe(status, "Waiting for promotion")
  return hs
end

if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(status, "Suspended (spec.suspend)")
  return hs
end

hs.status = "Progressing"
hs.message = describe(status, phase)
return hs
