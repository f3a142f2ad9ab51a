-- Records the callbacks that metadata changes and jobs trigger.
calls = {}

local function record(name)
   return function(id)
      table.insert(calls, name .. ' ' .. id)
   end
end

OnUpdatedStudy = record('OnUpdatedStudy')
OnUpdatedInstance = record('OnUpdatedInstance')
OnJobSubmitted = record('OnJobSubmitted')
OnJobSuccess = record('OnJobSuccess')
OnJobFailure = record('OnJobFailure')
