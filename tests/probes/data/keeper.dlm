---
dlm_id: 01KEEPER
base_model: smollm2-135m
---
# The lamp
At dusk the keeper climbed the hundred steps of the tower and lit the great lamp. Its beam swept across the dark water, and the fishing boats far out at sea turned their bows away from the rocks. He wrote the hour in the log, wound the clockwork that turned the lens, and sat by the window to watch the fog roll in from the east.

# The garden
Behind the keeper's cottage there was a small walled garden with beans, onions and a row of tall sunflowers. In summer he watered it every evening from the rain barrel, and in autumn he dug the potatoes and stored them in a dry cellar under the kitchen floor, where they kept until the spring.

# The storm
In the third week of November a storm came up from the south. The waves broke over the lower gallery, the windows rattled in their frames, and the keeper did not sleep for two nights. He kept the lamp burning and the lens turning, and on the third morning the wind fell and the sea was grey and calm again.

::instruction::
### Q
What did the keeper light at dusk?
### A
The great lamp at the top of the tower.

### Q
Where did the keeper store the potatoes?
### A
In a dry cellar under the kitchen floor.

::preference::
### Prompt
During a storm the keeper should
### Chosen
 keep the lamp burning all night.
### Rejected
 go to bed early.

### Prompt
A lighthouse lamp should be
### Chosen
 bright and steady.
### Rejected
 dim and flickering.
